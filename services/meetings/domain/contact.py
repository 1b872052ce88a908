"""A person's contact details. The values are personal data and must stay correctable
and erasable, so they are kept in an erasable store (``meetings.contacts``), written in
the same transaction; the event log records only that they changed or were erased."""

from __future__ import annotations

from services.meetings.domain.errors import reject
from shared.contract import DomainEvent
from shared.contract.commands import EraseContactDetails, SetContactDetails
from shared.contract.events import ContactDetailsChanged, ContactDetailsErased


def stream_id(person_id: str) -> str:
    return f"person-{person_id}"


def _has_details(history: list[DomainEvent]) -> bool:
    has = False
    for event in history:
        if isinstance(event, ContactDetailsChanged):
            has = True
        elif isinstance(event, ContactDetailsErased):
            has = False
    return has


def change(cmd: SetContactDetails, history: list[DomainEvent]) -> list[DomainEvent]:
    changed = [name for name in ("phone", "email") if getattr(cmd, name) is not None]
    if not changed:
        raise reject(
            "nothing_to_change",
            "Cần ít nhất số điện thoại hoặc thư điện tử.",
            "Give a phone number or an e-mail address.",
        )
    return [ContactDetailsChanged(person_id=cmd.person_id, ward_id=cmd.ward_id, changed=changed)]


def erase(cmd: EraseContactDetails, history: list[DomainEvent]) -> list[DomainEvent]:
    if not _has_details(history):
        raise reject(
            "no_contact_details",
            "Không có thông tin liên hệ để xóa.",
            "There are no contact details to erase.",
        )
    return [ContactDetailsErased(person_id=cmd.person_id, ward_id=cmd.ward_id)]
