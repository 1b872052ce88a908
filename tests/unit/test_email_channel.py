"""The e-mail channel against a real SMTP server (aiosmtpd, in this process): the bytes it
sends, and the duplicate window (a connection commits its next message only once the last
one is recorded)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from ops.stack import free_port
from services.notifications.adapters.channels import (
    EmailChannel,
    Outgoing,
    PermanentFailure,
    TemporaryFailure,
)
from tests.integration.helpers import eventually

SENDER = "Chibo <thong-bao@chibo.local>"
SUBJECT = "[Chi bộ nam-ngan.to-01] Thông báo lịch sinh hoạt thường kỳ ngày 03/12/2026"


class Recording:
    def __init__(self) -> None:
        self.rcpts = 0
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.rcpts += 1
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def parsed(self, i: int) -> EmailMessage:
        message = email.message_from_bytes(self.received[i][2], policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


@pytest.fixture()
def server() -> Any:
    handler = Recording()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


def outgoing(n: int, address: str | None = None) -> Outgoing:
    return Outgoing(
        delivery_id=n,
        message_key=f"delivery-{n}",
        trigger="meeting_scheduled",
        person_id=f"p{n}",
        address=address or f"p{n}@thu.chibo.local",
        subject=SUBJECT,
        text="Kính gửi các đồng chí đảng viên",
        html="<p>Kính gửi các đồng chí <b>đảng viên</b></p>",
    )


class FixedClock:
    def now(self) -> datetime:
        return datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


async def test_each_recipient_gets_the_shared_content_with_its_own_headers(server: Any) -> None:
    handler, port = server
    channel = EmailChannel("127.0.0.1", port, SENDER, connections=2, clock=FixedClock())
    try:
        await asyncio.gather(*(channel.send(outgoing(n)) for n in (1, 2, 3)))
    finally:
        await channel.close()
    assert sorted(rcpts[0] for _, rcpts, _ in handler.received) == [
        f"p{n}@thu.chibo.local" for n in (1, 2, 3)
    ]
    for i, (mail_from, [rcpt], raw) in enumerate(handler.received):
        assert mail_from == "thong-bao@chibo.local"
        message = handler.parsed(i)
        assert message["To"] == rcpt
        n = rcpt.split("@")[0].removeprefix("p")
        assert message["Message-ID"] == f"<delivery-{n}@chibo.local>"
        assert message["X-Chibo-Delivery"] == f"delivery-{n}"
        assert message["Date"].datetime == FixedClock().now()
        assert str(message["Subject"]) == SUBJECT
        assert str(message["From"]) == SENDER
        body = message.get_body(("plain",))
        assert body is not None and body.get_content() == "Kính gửi các đồng chí đảng viên"
        html = message.get_body(("html",))
        assert html is not None and "<b>đảng viên</b>" in html.get_content()
        assert max(len(line) for line in raw.split(b"\n")) <= 998


async def test_an_address_unfit_for_a_header_is_encoded_by_the_library(server: Any) -> None:
    handler, port = server
    channel = EmailChannel("127.0.0.1", port, SENDER, connections=1)
    odd = '"Nguyen Van A"@thu.chibo.local'  # a quoted local part, with a space
    try:
        await channel.send(outgoing(7, odd))
    finally:
        await channel.close()
    message = handler.parsed(0)
    assert message["To"] == odd and message["Message-ID"] == "<delivery-7@chibo.local>"
    assert str(message["Subject"]) == SUBJECT


async def test_the_next_message_on_a_connection_waits_until_the_last_is_recorded(
    server: Any,
) -> None:
    handler, port = server
    loop = asyncio.get_running_loop()
    channel = EmailChannel("127.0.0.1", port, SENDER, connections=1)
    try:
        first: asyncio.Future[bool] = loop.create_future()
        await channel.send(outgoing(1), first)
        assert len(handler.received) == 1
        recorded_second: asyncio.Future[bool] = loop.create_future()
        second = asyncio.create_task(channel.send(outgoing(2), recorded_second))

        async def envelope_ready() -> bool:
            return handler.rcpts == 2

        # MAIL and RCPT go ahead while the first is being recorded; DATA does not.
        await eventually(envelope_ready, timeout_s=10, what="the second message's RCPT")
        assert len(handler.received) == 1 and not second.done()
        first.set_result(True)
        await asyncio.wait_for(second, 10)
        assert len(handler.received) == 2

        recorded_second.set_result(True)

        # The third could not be recorded: nothing more goes on top of it.
        unrecorded: asyncio.Future[bool] = loop.create_future()
        await channel.send(outgoing(3), unrecorded)
        unrecorded.set_result(False)
        with pytest.raises(TemporaryFailure):
            await channel.send(outgoing(4))
        assert [rcpts for _, rcpts, _ in handler.received][-1] == ["p3@thu.chibo.local"]
        await channel.send(outgoing(5))  # the refused one was not accepted: no wait
        assert len(handler.received) == 4
    finally:
        await channel.close()


class RefusingWithTheAddress(Recording):
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return f"550 5.1.1 <{address.upper()}>: Recipient address rejected"


async def test_an_error_text_keeps_no_address() -> None:
    # last_error and the log keep the reason, never the (personal) address.
    controller = Controller(RefusingWithTheAddress(), hostname="127.0.0.1", port=free_port())
    controller.start()
    channel = EmailChannel("127.0.0.1", controller.port, SENDER, connections=1)
    try:
        with pytest.raises(PermanentFailure) as refused:
            await channel.send(outgoing(9))
    finally:
        await channel.close()
        controller.stop()
    reason = str(refused.value)
    assert reason.startswith("smtp 550") and "Recipient address rejected" in reason
    assert "<<recipient>>" in reason and "@" not in reason
