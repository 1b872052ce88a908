"""E-mail over SMTP (aiosmtplib): plain text with an HTML alternative."""

from __future__ import annotations

from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import aiosmtplib
from pydantic import SecretStr


def build_message(
    sender: str, recipient: str, subject: str, text: str, html: str, message_key: str
) -> MIMEMultipart:
    # The legacy MIME classes on purpose: Python 3.11's modern header folder drops the
    # space between RFC 2047 encoded words, which mangles long Vietnamese subjects.
    message = MIMEMultipart("alternative")
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = Header(subject, "utf-8")  # type: ignore[assignment]
    # A stable id per delivery lets a mail client fold the rare resend after a crash.
    message["Message-ID"] = f"<{message_key}@chibo.local>"
    message["X-Chibo-Delivery"] = message_key
    message.attach(MIMEText(text, "plain", "utf-8"))
    message.attach(MIMEText(html, "html", "utf-8"))
    return message


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
        await aiosmtplib.send(
            build_message(self._sender, recipient, subject, text, html, message_key),
            hostname=self._host,
            port=self._port,
            start_tls=self._start_tls,
            username=self._username,
            password=self._password.get_secret_value() if self._password else None,
            timeout=self._timeout_s,
        )
