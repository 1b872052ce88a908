"""The delivery channels: e-mail over SMTP (pooled connections), a signed JSON webhook
(the door for SMS and Zalo gateways), and a log channel for development.

Each raises ``TemporaryFailure`` (worth retrying: connection refused, 4xx SMTP replies,
any failure to connect or log in to the relay, HTTP 5xx/408/429) or ``PermanentFailure``
(5xx SMTP replies to a message, other HTTP 4xx); ``LeaseRunningOut`` when the message
could not start before its claim's ``send_by``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from typing import Protocol

import aiosmtplib
import httpx
from pydantic import SecretStr

from services.notifications.adapters.email import MailBytes
from shared.clock import Clock, SystemClock
from shared.logs import get_logger

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Chibo-Signature"
TIMESTAMP_HEADER = "X-Chibo-Timestamp"
DELIVERY_HEADER = "X-Chibo-Delivery"


def _without(address: str, text: str) -> str:
    """A server's or library's error text with the recipient's address taken out: it is
    kept in ``last_error`` and logged, and addresses are personal data."""
    return re.sub(re.escape(address), "<recipient>", text, flags=re.IGNORECASE)


class TemporaryFailure(Exception):
    """Worth another attempt later."""


class PermanentFailure(Exception):
    """The same message will fail again: dead-lettered at once."""


class LeaseRunningOut(Exception):
    """Not sent: the wait (for a connection, the rate limit) ran past ``send_by``, after
    which another dispatcher may claim the row. Nothing reached the server."""


def check_send_by(message: Outgoing, now: datetime) -> None:
    if message.send_by is not None and now > message.send_by:
        raise LeaseRunningOut(f"delivery {message.delivery_id}: past send_by")


@dataclass(frozen=True)
class Outgoing:
    delivery_id: int
    message_key: str  # stable per delivery: the Message-ID / the webhook's delivery id
    trigger: str
    person_id: str
    address: str  # the e-mail address or phone number, looked up just now
    subject: str
    text: str
    html: str
    # No part of the message goes to the server after this (None: no limit).
    send_by: datetime | None = None


class Channel(Protocol):
    name: str

    async def send(self, message: Outgoing, recorded: Recorded | None = None) -> None:
        """Returns once the channel accepted the message. ``recorded`` resolves when the
        dispatcher has recorded that (True) or failed to (False); a channel that keeps
        connections waits for it before committing the next message on the same one."""
        ...

    async def close(self) -> None: ...


Recorded = asyncio.Future[bool]


@dataclass
class _Slot:
    """One of the pool's connections (None until connected), and whether the last message
    it carried is recorded yet: that future carries over a reconnect."""

    client: aiosmtplib.SMTP | None = None
    previous: Recorded | None = None


class EmailChannel:
    """SMTP with a small pool of open connections, reused across messages: a connection
    sends one message at a time, so the pool size is the number in flight.

    A message's DATA (the point after which the server may have it) waits until the
    previous message on the same connection is recorded ``sent``, so a crash leaves at most
    one accepted-but-unrecorded message per connection, while MAIL and RCPT overlap that
    write."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        connections: int = 8,
        start_tls: bool = False,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self._host, self._port, self._sender = host, port, sender
        self._envelope_sender = parseaddr(sender)[1] or sender
        self._start_tls = start_tls
        self._username, self._password = username, password
        self._timeout_s = timeout_s
        self._clock = clock or SystemClock()
        self._mail = MailBytes(sender)
        self._idle: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(connections):
            self._idle.put_nowait(_Slot())  # connected lazily

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout_s,
            start_tls=self._start_tls,
        )
        await client.connect()
        if self._username:
            password = self._password.get_secret_value() if self._password else ""
            try:
                await client.login(self._username, password)
            except BaseException:
                client.close()
                raise
        return client

    async def send(self, message: Outgoing, recorded: Recorded | None = None) -> None:
        slot = await self._idle.get()
        try:
            check_send_by(message, self._clock.now())  # the wait for a connection counts
            data = self._mail.message(
                message.address,
                message.subject,
                message.text,
                message.html,
                message.message_key,
                self._clock.now(),
            )
            if slot.client is None or not slot.client.is_connected:
                try:
                    slot.client = await self._connect()
                except aiosmtplib.SMTPResponseException as exc:
                    # Refused at the greeting or the login: the relay or our settings, not
                    # this message, so worth retrying whatever the code.
                    raise TemporaryFailure(f"smtp connect {exc.code}: {exc.message}") from exc
            await self._transaction(slot, message, data)
            slot.previous = recorded
        except aiosmtplib.SMTPResponseException as exc:
            await _drop(slot)
            reason = _without(message.address, f"smtp {exc.code}: {exc.message}")
            if 500 <= exc.code < 600 and not isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                raise PermanentFailure(reason) from exc
            raise TemporaryFailure(reason) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await _drop(slot)
            codes = [r.code for r in exc.recipients]
            if codes and all(500 <= c < 600 for c in codes):
                raise PermanentFailure(f"smtp recipient refused: {codes}") from exc
            raise TemporaryFailure(f"smtp recipient refused: {codes}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await _drop(slot)
            reason = _without(message.address, f"smtp: {type(exc).__name__}: {exc}")
            raise TemporaryFailure(reason) from exc
        except ValueError as exc:  # aiosmtplib's check of an address unsafe on the wire
            await _drop(slot)
            reason = _without(message.address, f"smtp: {type(exc).__name__}: {exc}")
            raise PermanentFailure(reason) from exc
        finally:
            self._idle.put_nowait(slot)

    async def _transaction(self, slot: _Slot, message: Outgoing, data: bytes) -> None:
        recipient = message.address
        client = slot.client
        assert client is not None
        options = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
        encoding = "ascii"
        if not recipient.isascii():
            if not client.supports_extension("smtputf8"):
                raise PermanentFailure("smtp: a non-ASCII address and no SMTPUTF8")
            options.append("SMTPUTF8")
            encoding = "utf-8"
        await client.mail(self._envelope_sender, options=options, encoding=encoding)
        await client.rcpt(recipient, encoding=encoding)
        previous, slot.previous = slot.previous, None
        if previous is not None and not await previous:
            # The last message here may be unrecorded: send nothing more on top of it.
            await _drop(slot)
            raise TemporaryFailure("smtp: the previous message on this connection is unrecorded")
        try:
            check_send_by(message, self._clock.now())
        except LeaseRunningOut:
            await _drop(slot)  # MAIL and RCPT are open: start the next one afresh
            raise
        await client.data(data)

    async def close(self) -> None:
        while not self._idle.empty():
            await _drop(self._idle.get_nowait())


async def _drop(slot: _Slot) -> None:
    client, slot.client = slot.client, None
    if client is not None and client.is_connected:
        try:
            await client.quit()
        except Exception:  # a broken connection: closing it is all that is left
            client.close()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over ``timestamp + "." + body``, hex: the X-Chibo-Signature value."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookChannel:
    """POSTs a JSON notice to a gateway, signed with HMAC-SHA256 over timestamp and body."""

    name = "webhook"

    def __init__(self, url: str, secret: SecretStr, timeout_s: float = 10.0) -> None:
        self._url = url
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def send(self, message: Outgoing, recorded: Recorded | None = None) -> None:
        body = json.dumps(
            {
                "delivery_id": message.message_key,
                "trigger": message.trigger,
                "person_id": message.person_id,
                "phone": message.address,
                "subject": message.subject,
                "text": message.text,
            },
            ensure_ascii=False,
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret.get_secret_value(), timestamp, body),
            DELIVERY_HEADER: message.message_key,  # the receiver's idempotency key
        }
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TemporaryFailure(f"webhook: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise TemporaryFailure(f"webhook: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise PermanentFailure(f"webhook: HTTP {response.status_code}")

    async def close(self) -> None:
        await self._client.aclose()


class LogChannel:
    """Development: writes the notice to the service log (no address: logs stay clean)."""

    name = "log"

    async def send(self, message: Outgoing, recorded: Recorded | None = None) -> None:
        log.info(
            "notice.logged",
            delivery_id=message.delivery_id,
            trigger=message.trigger,
            subject=message.subject,
        )

    async def close(self) -> None:
        return None
