"""E-mail for SMTP: plain text with an HTML alternative, as bytes ready for DATA.

The ``email`` package's encoding (RFC 2047 subject, base64 bodies, boundary, folding) is
most of the CPU of a send, and every recipient of a notice gets the same content. So
``MailBytes`` encodes each distinct content once, with the library, and per message only
prepends the headers that differ per recipient (To, Message-ID, X-Chibo-Delivery, Date).
"""

from __future__ import annotations

import functools
import io
import re
from datetime import datetime
from email.generator import BytesGenerator
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime

_WIRE = compat32.clone(linesep="\r\n")
# A bare address that can go into a header as it is; anything else takes the library path.
_PLAIN_ADDRESS = re.compile(r"[!-~]{1,900}")


def _content(sender: str, subject: str, text: str, html: str) -> MIMEMultipart:
    # The legacy MIME classes on purpose: Python 3.11's modern header folder drops the
    # space between RFC 2047 encoded words, which mangles long Vietnamese subjects.
    message = MIMEMultipart("alternative")
    message["From"] = sender
    message["Subject"] = Header(subject, "utf-8")  # type: ignore[assignment]
    message.attach(MIMEText(text, "plain", "utf-8"))
    message.attach(MIMEText(html, "html", "utf-8"))
    return message


def _recipient_headers(recipient: str, message_key: str, date: datetime | None) -> list[str]:
    # A stable id per delivery lets a mail client fold the rare resend after a crash.
    headers = [
        f"To: {recipient}",
        f"Message-ID: <{message_key}@chibo.local>",
        f"X-Chibo-Delivery: {message_key}",
    ]
    if date is not None:
        headers.append(f"Date: {format_datetime(date)}")
    return headers


def build_message(
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    html: str,
    message_key: str,
    date: datetime | None = None,
) -> MIMEMultipart:
    """The whole message as a library object (what ``MailBytes`` produces as bytes)."""
    message = _content(sender, subject, text, html)
    for header in _recipient_headers(recipient, message_key, date):
        name, _, value = header.partition(": ")
        message[name] = value
    return message


def flatten(message: Message) -> bytes:
    """The message on the wire: CRLF line ends, 7-bit (the parts are base64)."""
    with io.BytesIO() as out:
        BytesGenerator(out, policy=_WIRE).flatten(message)
        return out.getvalue()


class MailBytes:
    """Messages as bytes for ``SMTP.sendmail``, each distinct content encoded once."""

    def __init__(self, sender: str, cache_size: int = 256) -> None:
        self._sender = sender
        # Keyed by the texts themselves: a notice to N people encodes its content once.
        self._encoded = functools.lru_cache(maxsize=cache_size)(self._encode)

    def message(
        self,
        recipient: str,
        subject: str,
        text: str,
        html: str,
        message_key: str,
        date: datetime | None = None,
    ) -> bytes:
        if not (_PLAIN_ADDRESS.fullmatch(recipient) and _PLAIN_ADDRESS.fullmatch(message_key)):
            # Never splice an odd value into a header: let the library encode it.
            return flatten(
                build_message(self._sender, recipient, subject, text, html, message_key, date)
            )
        head = "\r\n".join(_recipient_headers(recipient, message_key, date))
        return head.encode("ascii") + b"\r\n" + self._encoded(subject, text, html)

    def _encode(self, subject: str, text: str, html: str) -> bytes:
        return flatten(_content(self._sender, subject, text, html))
