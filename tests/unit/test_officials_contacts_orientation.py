"""Given events, when a command, then events or a rejection: officials, contact details,
and the ward's monthly orientation."""

from __future__ import annotations

from datetime import datetime

import pytest

from services.meetings.domain import contact, orientation
from services.meetings.domain.errors import DomainRejection
from services.meetings.domain.meeting import Meeting
from shared.clock import LOCAL_TZ
from shared.contract import ScheduleMeeting
from shared.contract.commands import (
    AppointOfficial,
    EraseContactDetails,
    IssueOrientation,
    SetContactDetails,
)
from shared.contract.events import (
    ContactDetailsChanged,
    OfficialAppointed,
    OfficialRole,
    OrientationIssued,
)
from tests.unit.test_meeting_lifecycle import CELL, IDS, a_cell, cell_history

WARD = IDS["ward_id"]


def code_of(decide) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(DomainRejection) as caught:
        decide()
    assert caught.value.message_vi
    return caught.value.code


def test_a_secretary_is_a_member_and_a_new_one_replaces_the_old() -> None:
    appoint = AppointOfficial(
        role=OfficialRole.SECRETARY, person_id="m1", full_name="Nguyễn Văn 1", **IDS
    )
    first = a_cell().appoint(appoint)[0]
    assert isinstance(first, OfficialAppointed) and first.replaces_person_id is None
    from services.meetings.domain.cell import Cell

    cell = Cell.replay(CELL, [*cell_history(), first])
    assert code_of(lambda: cell.appoint(appoint)) == "already_holds"
    second = cell.appoint(appoint.model_copy(update={"person_id": "m2"}))[0]
    assert isinstance(second, OfficialAppointed) and second.replaces_person_id == "m1"
    outsider = appoint.model_copy(update={"person_id": "stranger"})
    assert code_of(lambda: a_cell().appoint(outsider)) == "not_a_member"
    in_charge = appoint.model_copy(
        update={"role": OfficialRole.WARD_MEMBER_IN_CHARGE, "person_id": "dang-uy-vien-1"}
    )
    assert a_cell().appoint(in_charge)  # the ward's member in charge is not a cell member


def test_contact_details_never_enter_the_log() -> None:
    cmd = SetContactDetails(
        person_id="p1", ward_id=WARD, phone="+84 912 345 678", email="lan@example.vn"
    )
    event = contact.change(cmd, [], None)[0]
    assert isinstance(event, ContactDetailsChanged) and event.changed == ["phone", "email"]
    dumped = event.model_dump_json()
    assert "912" not in dumped and "lan@" not in dumped
    erase = EraseContactDetails(person_id="p1", ward_id=WARD)
    assert code_of(lambda: contact.erase(erase, [], WARD)) == "no_contact_details"
    erased = contact.erase(erase, [event], WARD)
    assert code_of(lambda: contact.erase(erase, [event, *erased], WARD)) == "no_contact_details"
    nothing = SetContactDetails(person_id="p1", ward_id=WARD)
    assert code_of(lambda: contact.change(nothing, [], WARD)) == "nothing_to_change"


def test_only_the_ward_a_person_belongs_to_now_changes_or_erases_their_details() -> None:
    """A member who moved ward: the new ward corrects and erases, the old one is refused
    with its own code (not a concurrency conflict); the stream keeps its first ward."""
    first = contact.change(
        SetContactDetails(person_id="p1", ward_id="a", phone="0912345678"), [], None
    )
    moved = SetContactDetails(person_id="p1", ward_id="b", email="lan@example.vn")
    event = contact.change(moved, first, "b")[0]
    assert isinstance(event, ContactDetailsChanged) and event.ward_id == "b"
    assert contact.stream_ward(first, "b") == "a"  # one key for the stream, in order
    assert contact.stream_ward([], "b") == "b"
    assert code_of(lambda: contact.change(moved, first, "a")) == "wrong_ward"
    erase = EraseContactDetails(person_id="p1", ward_id="b")
    assert contact.erase(erase, first, "b")
    with pytest.raises(DomainRejection) as caught:
        contact.erase(EraseContactDetails(person_id="p1", ward_id="a"), first, "b")
    assert caught.value.code == "wrong_ward" and "không thuộc đảng bộ a" in caught.value.message_vi


def test_an_orientation_is_issued_once_and_marked_on_time_before_the_first() -> None:
    cmd = IssueOrientation(
        orientation_id="nam-ngan.2026-12", ward_id=WARD, month="2026-12",
        topics=["Học tập Nghị quyết Đại hội", "Chuẩn bị Tết Nguyên đán"],
    )  # fmt: skip
    early = orientation.issue(cmd, [], datetime(2026, 11, 28, 9, tzinfo=LOCAL_TZ))[0]
    assert isinstance(early, OrientationIssued) and early.on_time
    late = orientation.issue(cmd, [], datetime(2026, 12, 2, 9, tzinfo=LOCAL_TZ))[0]
    assert isinstance(late, OrientationIssued) and not late.on_time
    again = lambda: orientation.issue(cmd, [early], datetime(2026, 11, 29, tzinfo=LOCAL_TZ))  # noqa: E731
    assert code_of(again) == "already_exists"
    over = lambda: orientation.issue(cmd, [], datetime(2027, 1, 1, 0, 1, tzinfo=LOCAL_TZ))  # noqa: E731
    assert code_of(over) == "month_over"


def test_a_meeting_linked_to_an_orientation_needs_that_wards_orientation() -> None:
    schedule = ScheduleMeeting(
        meeting_id="m", scheduled_start=datetime(2026, 12, 3, 19, 30, tzinfo=LOCAL_TZ),
        orientation_id="nam-ngan.2026-12", **IDS,
    )  # fmt: skip
    assert (
        code_of(lambda: Meeting.replay("m", []).schedule(schedule, a_cell(), None))
        == "unknown_orientation"
    )
    issued = OrientationIssued(
        orientation_id="nam-ngan.2026-12", ward_id=WARD, month="2026-12", topics=["x"],
        issued_at=datetime(2026, 11, 28, tzinfo=LOCAL_TZ), on_time=True,
    )  # fmt: skip
    assert Meeting.replay("m", []).schedule(schedule, a_cell(), issued)
    foreign = issued.model_copy(update={"ward_id": "other"})
    assert (
        code_of(lambda: Meeting.replay("m", []).schedule(schedule, a_cell(), foreign))
        == "unknown_orientation"
    )


def test_units_above_the_cell_have_their_secretary_and_deputy() -> None:
    from services.meetings.domain import unit
    from shared.contract.commands import AppointUnitOfficial, RegisterUnit
    from shared.contract.events import UnitOfficialAppointed

    registered = unit.register(
        RegisterUnit(unit_id="nam-ngan", parent_id="tp-thanh-hoa", level="ward", name="Nam Ngạn"),
        [],
    )
    appoint = AppointUnitOfficial(
        unit_id="nam-ngan", role=OfficialRole.SECRETARY, person_id="bt-1", full_name="Lê Văn Bình"
    )
    assert code_of(lambda: unit.appoint(appoint, [])) == "unknown_unit"
    first = unit.appoint(appoint, registered)[0]
    assert isinstance(first, UnitOfficialAppointed) and first.ward_id == "nam-ngan"
    assert code_of(lambda: unit.appoint(appoint, [*registered, first])) == "already_holds"
    nxt = unit.appoint(appoint.model_copy(update={"person_id": "bt-2"}), [*registered, first])[0]
    assert isinstance(nxt, UnitOfficialAppointed) and nxt.replaces_person_id == "bt-1"
    in_charge = appoint.model_copy(update={"role": OfficialRole.WARD_MEMBER_IN_CHARGE})
    assert code_of(lambda: unit.appoint(in_charge, registered)) == "cell_office"
