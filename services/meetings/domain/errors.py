"""Rejections the domain can give. Each carries a stable code and texts for officials."""

from __future__ import annotations


class DomainRejection(Exception):
    """A command that breaks a rule. ``code`` is machine-readable; the texts are for people."""

    def __init__(
        self,
        code: str,
        message_vi: str,
        message_en: str,
        details: dict[str, object] | None = None,
        status: int = 409,
    ) -> None:
        super().__init__(message_en)
        self.code = code
        self.status = status
        self.message_vi = message_vi
        self.message_en = message_en
        self.details = details or {}


def reject(code: str, message_vi: str, message_en: str, **details: object) -> DomainRejection:
    return DomainRejection(code, message_vi, message_en, details)
