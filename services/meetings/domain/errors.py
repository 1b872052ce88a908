"""Rejections the domain can give. Each carries a stable code and texts for officials."""

from __future__ import annotations


class DomainRejection(Exception):
    """A command that breaks a rule. ``code`` is machine-readable; the texts are for people."""

    code: str = "rejected"
    status: int = 422

    def __init__(self, message_vi: str, message_en: str, **details: object) -> None:
        super().__init__(message_en)
        self.message_vi = message_vi
        self.message_en = message_en
        self.details = details


class AlreadyExists(DomainRejection):
    code = "already_exists"
    status = 409
