"""E-mail over SMTP (aiosmtplib): plain text with an HTML alternative."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib
from pydantic import SecretStr


class SmtpSender:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        start_tls: bool = False,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._start_tls = start_tls
        self._username = username
        self._password = password
        self._timeout_s = timeout_s

    async def send(
        self, recipient: str, subject: str, text: str, html: str, message_key: str
    ) -> None:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = recipient
        message["Subject"] = subject
        # A stable id per delivery lets a mail client fold the rare resend after a crash.
        message["Message-ID"] = f"<{message_key}@chibo.local>"
        message["X-Chibo-Delivery"] = message_key
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        await aiosmtplib.send(
            message,
            hostname=self._host,
            port=self._port,
            start_tls=self._start_tls,
            username=self._username,
            password=self._password.get_secret_value() if self._password else None,
            timeout=self._timeout_s,
        )
