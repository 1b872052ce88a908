"""A person's contact details. The values are personal data and must stay correctable
and erasable, so they are kept in an erasable store (``meetings.contacts``), written in
the same transaction; the event log records only that they changed or were erased.

A person is not a ward's: members transfer between cells and wards. So the stream
``person-<id>`` stays where it was created (its events keep that ward as their ward, and
so as their Kafka key: one partition, in order), while the ward that may change or erase
the details is the ward the person belongs to now (``person_ward``: a member's current
cell's ward, else the ward of their stored details), given by the caller."""

from __future__ import annotations

from services.meetings.domain.errors import reject
from shared.contract import DomainEvent
from shared.contract.commands import EraseContactDetails, SetContactDetails
from shared.contract.events import ContactDetailsChanged, ContactDetailsErased


def stream_id(person_id: str) -> str:
    return f"person-{person_id}"


def stream_ward(history: list[DomainEvent], ward_id: str) -> str:
    """The ward of the stream: of its first event, whichever ward acts now. The events of
    one stream must share a key, or a consumer could get them out of order."""
    first = history[0] if history else None
    if isinstance(first, ContactDetailsChanged | ContactDetailsErased):
        return first.ward_id
    return ward_id


def _has_details(history: list[DomainEvent]) -> bool:
    has = False
    for event in history:
        if isinstance(event, ContactDetailsChanged):
            has = True
        elif isinstance(event, ContactDetailsErased):
            has = False
    return has


def _require_ward(person_id: str, ward_id: str, person_ward: str | None) -> None:
    """Only the person's own ward acts for them (None: not known yet, any ward may)."""
    if person_ward is not None and person_ward != ward_id:
        raise reject(
            "wrong_ward",
            f"Người có mã {person_id} không thuộc đảng bộ {ward_id}: thông tin liên hệ do"
            " đảng bộ nơi người này đang sinh hoạt cập nhật hoặc xóa.",
            f"Person {person_id} does not belong to ward {ward_id}: their contact details"
            " are changed or erased by the ward they belong to now.",
        )


def change(
    cmd: SetContactDetails, history: list[DomainEvent], person_ward: str | None
) -> list[DomainEvent]:
    _require_ward(cmd.person_id, cmd.ward_id, person_ward)
    changed = [name for name in ("phone", "email") if getattr(cmd, name) is not None]
    if not changed:
        raise reject(
            "nothing_to_change",
            "Cần ít nhất số điện thoại hoặc thư điện tử.",
            "Give a phone number or an e-mail address.",
        )
    return [ContactDetailsChanged(person_id=cmd.person_id, ward_id=cmd.ward_id, changed=changed)]


def erase(
    cmd: EraseContactDetails, history: list[DomainEvent], person_ward: str | None
) -> list[DomainEvent]:
    _require_ward(cmd.person_id, cmd.ward_id, person_ward)
    if not _has_details(history):
        raise reject(
            "no_contact_details",
            "Không có thông tin liên hệ để xóa.",
            "There are no contact details to erase.",
        )
    return [ContactDetailsErased(person_id=cmd.person_id, ward_id=cmd.ward_id)]
