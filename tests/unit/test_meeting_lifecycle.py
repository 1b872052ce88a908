"""Given events, when a command, then events or a rejection: cells and meetings."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.meetings.domain.cell import Cell
from services.meetings.domain.errors import DomainRejection
from services.meetings.domain.meeting import Meeting
from shared.clock import LOCAL_TZ
from shared.contract import DomainEvent, MeetingScheduled
from shared.contract.commands import (
    AdmitMember,
    AdoptResolution,
    CancelMeeting,
    CloseMeeting,
    CompleteTask,
    ExemptMember,
    OpenMeeting,
    RegisterCell,
    RescheduleMeeting,
    TransferMember,
)
from shared.contract.events import (
    Attendance,
    AttendanceEntry,
    CellRegistered,
    MeetingCancelled,
    MeetingClosed,
    MeetingKind,
    MeetingOpened,
    MemberAdmitted,
    MemberExempted,
    MemberStatus,
    ResolutionAdopted,
    ResolutionTask,
)

WARD, CELL, MEETING = "nam-ngan", "nam-ngan.to-01", "nam-ngan.to-01.2026-12"
START = datetime(2026, 12, 3, 19, 30, tzinfo=LOCAL_TZ)
NOW = START + timedelta(hours=3)
IDS: dict[str, Any] = dict(ward_id=WARD, cell_id=CELL)
MIDS: dict[str, Any] = dict(meeting_id=MEETING, **IDS)


def cell_history(members: int = 3, roll_calls: int = 2, exempt: tuple[str, ...] = ()) -> list:
    events: list[DomainEvent] = [
        CellRegistered(name="Chi bộ Tổ dân phố 1", meeting_day=3, roll_calls=roll_calls, **IDS)
    ]
    for n in range(1, members + 1):
        events.append(
            MemberAdmitted(
                member_id=f"m{n}", full_name=f"Nguyễn Văn {n}", status=MemberStatus.FULL, **IDS
            )
        )
    for member_id in exempt:
        events.append(
            MemberExempted(
                member_id=member_id, exempt_from=date(2026, 1, 1), reason="Tuổi cao", **IDS
            )
        )
    return events


def a_cell(**kwargs: object) -> Cell:
    return Cell.replay(CELL, cell_history(**kwargs))  # type: ignore[arg-type]


def scheduled() -> list[DomainEvent]:
    return [MeetingScheduled(kind=MeetingKind.REGULAR, scheduled_start=START, **MIDS)]


def present(*ids: str) -> list[AttendanceEntry]:
    return [AttendanceEntry(member_id=i, status=Attendance.PRESENT) for i in ids]


def opened(history: list[DomainEvent] | None = None, cell: Cell | None = None) -> list:
    history = history if history is not None else scheduled()
    cmd = OpenMeeting(opened_at=START, roll_call=present("m1", "m2", "m3"), **MIDS)
    return history + Meeting.replay(MEETING, history).open(cmd, cell or a_cell(), NOW)


def rejected(code: str, decide) -> DomainRejection:  # type: ignore[no-untyped-def]
    with pytest.raises(DomainRejection) as caught:
        decide()
    assert caught.value.code == code, caught.value.message_en
    assert caught.value.message_vi
    return caught.value


# -- cells ------------------------------------------------------------------------------


def test_a_cell_is_registered_once() -> None:
    cmd = RegisterCell(name="Chi bộ Tổ dân phố 1", **IDS)
    assert isinstance(Cell.replay(CELL, []).register(cmd)[0], CellRegistered)
    rejected("already_exists", lambda: a_cell().register(cmd))


def test_members_join_once_and_only_a_registered_cell_of_that_ward() -> None:
    admit = AdmitMember(member_id="m9", full_name="Trần Thị Hoa", **IDS)
    assert isinstance(a_cell().admit(admit)[0], MemberAdmitted)
    rejected("unknown_cell", lambda: Cell.replay(CELL, []).admit(admit))
    rejected(
        "already_a_member", lambda: a_cell().admit(admit.model_copy(update={"member_id": "m1"}))
    )
    rejected("wrong_ward", lambda: a_cell().admit(admit.model_copy(update={"ward_id": "x"})))


def test_exemption_needs_a_member_and_a_sane_period() -> None:
    exempt = ExemptMember(member_id="m1", exempt_from=date(2026, 5, 1), reason="Ốm đau", **IDS)
    assert isinstance(a_cell().exempt(exempt)[0], MemberExempted)
    rejected("not_a_member", lambda: a_cell().exempt(exempt.model_copy(update={"member_id": "zz"})))
    backwards = exempt.model_copy(update={"exempt_until": date(2026, 4, 1)})
    rejected("invalid_period", lambda: a_cell().exempt(backwards))


def test_a_transferred_member_leaves_the_roll() -> None:
    out = TransferMember(member_id="m3", to_cell_id="nam-ngan.to-02", **IDS)
    events = cell_history() + a_cell().transfer_out(out)
    assert "m3" not in Cell.replay(CELL, events).members
    rejected(
        "same_cell", lambda: a_cell().transfer_out(out.model_copy(update={"to_cell_id": CELL}))
    )


# -- meeting lifecycle ------------------------------------------------------------------


def test_reschedule_and_cancel_only_before_the_meeting_begins() -> None:
    move = RescheduleMeeting(scheduled_start=START + timedelta(days=1), reason="Mưa bão", **MIDS)
    cancel = CancelMeeting(reason="Trùng lịch bầu cử", **MIDS)
    assert Meeting.replay(MEETING, scheduled()).reschedule(move)
    assert isinstance(Meeting.replay(MEETING, scheduled()).cancel(cancel)[0], MeetingCancelled)
    rejected("unknown_meeting", lambda: Meeting.replay(MEETING, []).cancel(cancel))
    rejected("already_opened", lambda: Meeting.replay(MEETING, opened()).reschedule(move))
    cancelled = [*scheduled(), MeetingCancelled(reason="x", **MIDS)]
    rejected("meeting_cancelled", lambda: Meeting.replay(MEETING, cancelled).cancel(cancel))


def test_no_roll_call_on_a_cancelled_meeting() -> None:
    cancelled = [*scheduled(), MeetingCancelled(reason="Mưa bão", **MIDS)]
    cmd = OpenMeeting(opened_at=START, roll_call=present("m1", "m2", "m3"), **MIDS)
    rejected(
        "meeting_cancelled", lambda: Meeting.replay(MEETING, cancelled).open(cmd, a_cell(), NOW)
    )


def test_opening_lists_exempt_members_who_were_left_out() -> None:
    cell = a_cell(exempt=("m3",))
    cmd = OpenMeeting(opened_at=START, roll_call=present("m1", "m2"), **MIDS)
    event = Meeting.replay(MEETING, scheduled()).open(cmd, cell, NOW)[0]
    assert isinstance(event, MeetingOpened)
    assert [(e.member_id, e.status) for e in event.roll_call] == [
        ("m1", Attendance.PRESENT),
        ("m2", Attendance.PRESENT),
        ("m3", Attendance.EXEMPT),
    ]


@pytest.mark.parametrize(
    ("roll_call", "code"),
    [
        (present("m1", "m2", "m3", "stranger"), "not_a_member"),
        (present("m1", "m2", "m2", "m3"), "duplicate_entry"),
        (present("m1", "m2"), "incomplete_roll_call"),
        (
            [*present("m1", "m2"), AttendanceEntry(member_id="m3", status=Attendance.EXEMPT)],
            "exemption_mismatch",
        ),
        (
            [
                *present("m1", "m2"),
                AttendanceEntry(member_id="m3", status=Attendance.ABSENT_EXCUSED),
            ],
            "reason_required",
        ),
    ],
)
def test_roll_call_rules(roll_call: list[AttendanceEntry], code: str) -> None:
    cmd = OpenMeeting(opened_at=START, roll_call=roll_call, **MIDS)
    rejected(code, lambda: Meeting.replay(MEETING, scheduled()).open(cmd, a_cell(), NOW))


@pytest.mark.parametrize(
    "opened_at",
    [START - timedelta(days=1), NOW + timedelta(hours=1)],  # long before; in the future
)
def test_opening_time_must_be_plausible(opened_at: datetime) -> None:
    cmd = OpenMeeting(opened_at=opened_at, roll_call=present("m1", "m2", "m3"), **MIDS)
    rejected(
        "implausible_time", lambda: Meeting.replay(MEETING, scheduled()).open(cmd, a_cell(), NOW)
    )


def test_no_closing_before_opening_and_only_once() -> None:
    close = CloseMeeting(
        closed_at=START + timedelta(minutes=95), second_roll_call=present("m1", "m2", "m3"), **MIDS
    )
    rejected("not_opened", lambda: Meeting.replay(MEETING, scheduled()).close(close, a_cell(), NOW))
    history = opened()
    closed = history + Meeting.replay(MEETING, history).close(close, a_cell(), NOW)
    assert isinstance(closed[-1], MeetingClosed)
    rejected("already_closed", lambda: Meeting.replay(MEETING, closed).close(close, a_cell(), NOW))


def test_the_second_roll_call_follows_the_cells_practice() -> None:
    history = opened()
    once = CloseMeeting(closed_at=START + timedelta(minutes=90), **MIDS)
    rejected(
        "second_roll_call_required",
        lambda: Meeting.replay(MEETING, history).close(once, a_cell(), NOW),
    )
    single = a_cell(roll_calls=1)
    twice = once.model_copy(update={"second_roll_call": present("m1", "m2", "m3")})
    rejected(
        "no_second_roll_call", lambda: Meeting.replay(MEETING, history).close(twice, single, NOW)
    )
    assert Meeting.replay(MEETING, history).close(once, single, NOW)


def test_closing_time_and_speakers_are_checked() -> None:
    history = opened()
    base = CloseMeeting(
        closed_at=START + timedelta(minutes=90), second_roll_call=present("m1", "m2", "m3"), **MIDS
    )
    too_long = base.model_copy(update={"closed_at": START + timedelta(hours=9)})
    rejected(
        "implausible_time",
        lambda: Meeting.replay(MEETING, history).close(
            too_long, a_cell(), START + timedelta(days=1)
        ),
    )
    before = base.model_copy(update={"closed_at": START - timedelta(minutes=1)})
    rejected(
        "implausible_time", lambda: Meeting.replay(MEETING, history).close(before, a_cell(), NOW)
    )
    outsider = base.model_copy(update={"speakers": ["m1", "ghost"]})
    rejected(
        "speaker_not_present",
        lambda: Meeting.replay(MEETING, history).close(outsider, a_cell(), NOW),
    )


# -- resolutions and tasks --------------------------------------------------------------


def resolution(**overrides: object) -> AdoptResolution:
    fields: dict[str, object] = dict(
        resolution_id="nq-12",
        title="Nghị quyết tháng 12",
        votes_for=3,
        tasks=[
            ResolutionTask(
                task_id="t1",
                description="Vận động nhân dân làm đường ngõ 5",
                assignee="Đồng chí Tổ trưởng",
                due_on=date(2026, 12, 31),
            )
        ],
        **MIDS,
    )
    return AdoptResolution.model_validate({**fields, **overrides})


def test_a_resolution_is_adopted_at_an_opened_meeting_by_a_majority_of_those_present() -> None:
    assert isinstance(
        Meeting.replay(MEETING, opened()).adopt_resolution(resolution(), a_cell())[0],
        ResolutionAdopted,
    )
    rejected(
        "not_opened",
        lambda: Meeting.replay(MEETING, scheduled()).adopt_resolution(resolution(), a_cell()),
    )
    rejected(
        "votes_exceed_present",
        lambda: Meeting.replay(MEETING, opened()).adopt_resolution(
            resolution(votes_for=4), a_cell()
        ),
    )
    rejected(
        "not_adopted",
        lambda: Meeting.replay(MEETING, opened()).adopt_resolution(
            resolution(votes_for=1, votes_against=2), a_cell()
        ),
    )
    twice = opened() + Meeting.replay(MEETING, opened()).adopt_resolution(resolution(), a_cell())
    rejected(
        "already_exists",
        lambda: Meeting.replay(MEETING, twice).adopt_resolution(resolution(), a_cell()),
    )


def mixed_cell() -> Cell:
    """Five full members (m1-m5) and two probationary (p1, p2)."""
    history = cell_history(members=5)
    for member_id in ("p1", "p2"):
        history.append(
            MemberAdmitted(
                member_id=member_id,
                full_name=f"Lê Thị {member_id}",
                status=MemberStatus.PROBATIONARY,
                **IDS,
            )
        )
    return Cell.replay(CELL, history)


def opened_with(roll_call: list[AttendanceEntry], cell: Cell) -> list[DomainEvent]:
    cmd = OpenMeeting(opened_at=START, roll_call=roll_call, **MIDS)
    return scheduled() + Meeting.replay(MEETING, scheduled()).open(cmd, cell, NOW)


def absent(member_id: str, excused: bool) -> AttendanceEntry:
    if excused:
        return AttendanceEntry(member_id=member_id, status=Attendance.ABSENT_EXCUSED, reason="Ốm")
    return AttendanceEntry(member_id=member_id, status=Attendance.ABSENT_UNEXCUSED)


def test_probationary_members_do_not_vote() -> None:
    """Điều lệ Đảng, Điều 5: a probationary member has no vote."""
    cell = mixed_cell()
    history = opened_with(present("m1", "m2", "m3", "m4", "m5", "p1", "p2"), cell)
    refusal = rejected(
        "votes_exceed_present",
        lambda: Meeting.replay(MEETING, history).adopt_resolution(resolution(votes_for=6), cell),
    )
    assert refusal.details == {"votes": 6, "voters": 5}
    assert "dự bị" in refusal.message_vi and "probationary" in refusal.message_en
    assert Meeting.replay(MEETING, history).adopt_resolution(resolution(votes_for=5), cell)
    # The reviewer's case: one full and one probationary member present, two votes for.
    small = Cell.replay(
        CELL,
        [
            *cell_history(members=1),
            MemberAdmitted(
                member_id="p1", full_name="Lê Thị B", status=MemberStatus.PROBATIONARY, **IDS
            ),
        ],
    )
    two = opened_with(present("m1", "p1"), small)
    rejected(
        "votes_exceed_present",
        lambda: Meeting.replay(MEETING, two).adopt_resolution(resolution(votes_for=2), small),
    )
    assert Meeting.replay(MEETING, two).adopt_resolution(resolution(votes_for=1), small)


def test_a_resolution_needs_more_than_half_of_the_full_members_called_in() -> None:
    """Quy định 24-QĐ/TW 9.3.2: of the full members called in, not counting the exempt and
    those absent with a reason; not of the votes cast, nor of those present."""
    cell = mixed_cell()
    # 3 full present, 2 full absent without a reason: 5 counted, 3 needed.
    history = opened_with(
        [*present("m1", "m2", "m3", "p1", "p2"), absent("m4", False), absent("m5", False)], cell
    )
    refusal = rejected(
        "not_adopted",
        # 2 of 3 votes cast, and 2 of the 3 full members present: still not 3 of 5.
        lambda: Meeting.replay(MEETING, history).adopt_resolution(
            resolution(votes_for=2, votes_against=1), cell
        ),
    )
    assert refusal.details == {"votes_for": 2, "needed": 3, "full_members": 5}
    assert "quá nửa số đảng viên chính thức" in refusal.message_vi
    assert "more than half of the cell's full members" in refusal.message_en
    assert Meeting.replay(MEETING, history).adopt_resolution(resolution(votes_for=3), cell)
    # Absent with a reason: not counted, so 2 of the 3 counted suffice.
    excused = opened_with(
        [*present("m1", "m2", "m3", "p1", "p2"), absent("m4", True), absent("m5", True)], cell
    )
    assert Meeting.replay(MEETING, excused).adopt_resolution(
        resolution(votes_for=2, votes_against=1), cell
    )
    # Exempt members are not counted either.
    exempt = Cell.replay(CELL, [*cell_history(members=4, exempt=("m3", "m4"))])
    with_exempt = opened_with(present("m1", "m2"), exempt)
    assert Meeting.replay(MEETING, with_exempt).adopt_resolution(resolution(votes_for=2), exempt)
    rejected(
        "not_adopted",
        lambda: Meeting.replay(MEETING, with_exempt).adopt_resolution(
            resolution(votes_for=1, votes_abstain=1), exempt
        ),
    )


def test_a_task_is_completed_once_on_a_plausible_day() -> None:
    history = opened() + Meeting.replay(MEETING, opened()).adopt_resolution(resolution(), a_cell())
    done = CompleteTask(resolution_id="nq-12", task_id="t1", completed_on=date(2026, 12, 3), **MIDS)
    later = NOW + timedelta(days=2)
    completed = history + Meeting.replay(MEETING, history).complete_task(done, later)
    rejected(
        "already_completed", lambda: Meeting.replay(MEETING, completed).complete_task(done, later)
    )
    rejected(
        "unknown_task",
        lambda: Meeting.replay(MEETING, history).complete_task(
            done.model_copy(update={"task_id": "t9"}), later
        ),
    )
    future = done.model_copy(update={"completed_on": date(2027, 1, 30)})
    rejected(
        "implausible_time", lambda: Meeting.replay(MEETING, history).complete_task(future, later)
    )


# -- property: the attendance invariants --------------------------------------------------

statuses = st.sampled_from(
    [Attendance.PRESENT, Attendance.ABSENT_EXCUSED, Attendance.ABSENT_UNEXCUSED]
)


@given(
    size=st.integers(1, 25),
    exempt_mask=st.lists(st.booleans(), min_size=25, max_size=25),
    picks=st.lists(statuses, min_size=25, max_size=25),
    list_exempt=st.booleans(),
)
def test_any_complete_roll_call_counts_each_member_once(
    size: int, exempt_mask: list[bool], picks: list[Attendance], list_exempt: bool
) -> None:
    exempt = tuple(f"m{n}" for n in range(1, size + 1) if exempt_mask[n - 1])
    cell = a_cell(members=size, exempt=exempt)
    entries = []
    for n in range(1, size + 1):
        member_id = f"m{n}"
        if member_id in exempt:
            if list_exempt:
                entries.append(AttendanceEntry(member_id=member_id, status=Attendance.EXEMPT))
            continue
        status = picks[n - 1]
        reason = "Đi công tác" if status == Attendance.ABSENT_EXCUSED else None
        entries.append(AttendanceEntry(member_id=member_id, status=status, reason=reason))
    cmd = OpenMeeting(opened_at=START, roll_call=entries, **MIDS)
    event = Meeting.replay(MEETING, scheduled()).open(cmd, cell, NOW)[0]
    assert isinstance(event, MeetingOpened)
    listed = [e.member_id for e in event.roll_call]
    assert sorted(listed) == sorted(cell.members)  # everyone listed, exactly once
    counted = [e for e in event.roll_call if e.status != Attendance.EXEMPT]
    assert {e.member_id for e in counted} == set(cell.members) - set(exempt)


@given(extra=st.lists(st.sampled_from(["m1", "m2", "zz"]), min_size=1, max_size=3))
def test_any_roll_call_with_a_repeat_or_a_stranger_is_refused(extra: list[str]) -> None:
    cmd = OpenMeeting(opened_at=START, roll_call=present("m1", "m2", "m3", *extra), **MIDS)
    with pytest.raises(DomainRejection) as caught:
        Meeting.replay(MEETING, scheduled()).open(cmd, a_cell(), NOW)
    assert caught.value.code in ("duplicate_entry", "not_a_member")


def test_the_cell_committee_calls_only_those_who_attend() -> None:
    committee: list[DomainEvent] = [
        MeetingScheduled(kind=MeetingKind.COMMITTEE, scheduled_start=START, **MIDS)
    ]
    cmd = OpenMeeting(opened_at=START, roll_call=present("m1", "m2"), **MIDS)
    event = Meeting.replay(MEETING, committee).open(cmd, a_cell(), NOW)[0]
    assert isinstance(event, MeetingOpened)
    assert [e.member_id for e in event.roll_call] == ["m1", "m2"]
    stranger = OpenMeeting(opened_at=START, roll_call=present("m1", "zz"), **MIDS)
    rejected(
        "not_a_member", lambda: Meeting.replay(MEETING, committee).open(stranger, a_cell(), NOW)
    )


# -- a closed meeting, and a cell of another ward -------------------------------------------


def closed() -> list[DomainEvent]:
    close = CloseMeeting(
        closed_at=START + timedelta(hours=2), second_roll_call=present("m1", "m2", "m3"), **MIDS
    )
    return opened() + Meeting.replay(MEETING, opened()).close(close, a_cell(), NOW)


def test_no_resolution_is_adopted_after_the_meeting_closed_but_its_tasks_are_completed() -> None:
    after = closed()
    refusal = rejected(
        "meeting_closed",
        lambda: Meeting.replay(MEETING, after).adopt_resolution(resolution(), a_cell()),
    )
    assert "bế mạc" in refusal.message_vi
    # Adopted at the meeting, its tasks are carried out over the month, after the close.
    adopted = opened() + Meeting.replay(MEETING, opened()).adopt_resolution(resolution(), a_cell())
    close = CloseMeeting(
        closed_at=START + timedelta(hours=2), second_roll_call=present("m1", "m2", "m3"), **MIDS
    )
    history = adopted + Meeting.replay(MEETING, adopted).close(close, a_cell(), NOW)
    done = CompleteTask(resolution_id="nq-12", task_id="t1", completed_on=date(2026, 12, 5), **MIDS)
    assert Meeting.replay(MEETING, history).complete_task(done, NOW + timedelta(days=3))


def foreign_cell() -> Cell:
    """The same cell id, registered by another ward (with members of its own)."""
    events = cell_history()
    events[0] = events[0].model_copy(update={"ward_id": "other-ward"})
    return Cell.replay(CELL, events)


def test_a_meeting_is_scheduled_only_for_a_registered_cell_of_the_commands_ward() -> None:
    from shared.contract import ScheduleMeeting

    cmd = ScheduleMeeting(scheduled_start=START, **MIDS)
    assert Meeting.replay(MEETING, []).schedule(cmd, a_cell())
    rejected("unknown_cell", lambda: Meeting.replay(MEETING, []).schedule(cmd, Cell(CELL)))
    refusal = rejected(
        "wrong_ward", lambda: Meeting.replay(MEETING, []).schedule(cmd, foreign_cell())
    )
    assert "không thuộc đảng bộ" in refusal.message_vi


def test_a_meeting_is_not_opened_or_closed_with_another_wards_cell_nor_its_roll_named() -> None:
    cmd = OpenMeeting(opened_at=START, roll_call=[], **MIDS)
    refusal = rejected(
        "wrong_ward", lambda: Meeting.replay(MEETING, scheduled()).open(cmd, foreign_cell(), NOW)
    )
    assert "member_ids" not in refusal.details  # the other ward's roll is not disclosed
    close = CloseMeeting(closed_at=START + timedelta(hours=2), **MIDS)
    rejected(
        "wrong_ward", lambda: Meeting.replay(MEETING, opened()).close(close, foreign_cell(), NOW)
    )
