"""The meeting aggregate: schedule, reschedule or cancel, open with the first roll call,
adopt resolutions and complete their tasks, close with the second roll call.

Decisions that call the roll need the cell (its roll of members and who is exempt that
day) and the time now, both given by the caller: the aggregate does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.meetings.domain.cell import Cell
from services.meetings.domain.errors import reject
from shared.clock import LOCAL_TZ
from shared.contract import DomainEvent, MeetingKind, MeetingScheduled, ScheduleMeeting
from shared.contract.commands import (
    AdoptResolution,
    CancelMeeting,
    CloseMeeting,
    CompleteTask,
    OpenMeeting,
    RescheduleMeeting,
)
from shared.contract.events import (
    Attendance,
    AttendanceEntry,
    MeetingCancelled,
    MeetingClosed,
    MeetingOpened,
    MeetingRescheduled,
    MemberStatus,
    OrientationIssued,
    ResolutionAdopted,
    TaskCompleted,
)

CLOCK_SKEW = timedelta(minutes=5)  # a device's clock may run a little ahead
EARLIEST_OPENING = timedelta(hours=12)  # before the scheduled start
LONGEST_MEETING = timedelta(hours=8)


def stream_id(meeting_id: str) -> str:
    return f"meeting-{meeting_id}"


@dataclass
class Meeting:
    meeting_id: str
    scheduled: MeetingScheduled | None = None
    start: datetime | None = None
    cancelled: bool = False
    opened: MeetingOpened | None = None
    closed: bool = False
    resolutions: dict[str, ResolutionAdopted] = field(default_factory=dict)
    completed_tasks: set[tuple[str, str]] = field(default_factory=set)

    @classmethod
    def replay(cls, meeting_id: str, events: list[DomainEvent]) -> Meeting:
        meeting = cls(meeting_id)
        for event in events:
            meeting.apply(event)
        return meeting

    def apply(self, event: DomainEvent) -> None:
        match event:
            case MeetingScheduled():
                self.scheduled, self.start = event, event.scheduled_start
            case MeetingRescheduled():
                self.start = event.scheduled_start
            case MeetingCancelled():
                self.cancelled = True
            case MeetingOpened():
                self.opened = event
            case ResolutionAdopted():
                self.resolutions[event.resolution_id] = event
            case TaskCompleted():
                self.completed_tasks.add((event.resolution_id, event.task_id))
            case MeetingClosed():
                self.closed = True

    # -- decisions ---------------------------------------------------------------------
    def schedule(
        self, cmd: ScheduleMeeting, cell: Cell, orientation: OrientationIssued | None = None
    ) -> list[DomainEvent]:
        if cmd.orientation_id is not None and (
            orientation is None or orientation.ward_id != cmd.ward_id
        ):
            raise reject(
                "unknown_orientation",
                "Không tìm thấy định hướng sinh hoạt của đảng bộ cho tháng này.",
                f"No orientation {cmd.orientation_id} of ward {cmd.ward_id}.",
            )
        if self.scheduled is not None:
            raise reject(
                "already_exists",
                f"Cuộc họp {cmd.meeting_id} đã được lên lịch.",
                f"Meeting {cmd.meeting_id} is already scheduled.",
                meeting_id=cmd.meeting_id,
            )
        # A ward schedules its own cells' meetings only (the token's scope is the ward).
        cell.require_registered(cmd.ward_id)
        # Read from the command's attributes: the same validation, without a dict between.
        return [MeetingScheduled.model_validate(cmd, from_attributes=True)]

    def reschedule(self, cmd: RescheduleMeeting) -> list[DomainEvent]:
        self._require_pending(cmd.ward_id, cmd.cell_id)
        return [MeetingRescheduled(**cmd.model_dump())]

    def cancel(self, cmd: CancelMeeting) -> list[DomainEvent]:
        self._require_pending(cmd.ward_id, cmd.cell_id)
        return [MeetingCancelled(**cmd.model_dump())]

    def open(self, cmd: OpenMeeting, cell: Cell, now: datetime) -> list[DomainEvent]:
        self._require_scheduled(cmd.ward_id, cmd.cell_id)
        cell.require_registered(cmd.ward_id)  # before its roll is named in any answer
        self._require_not_cancelled()
        if self.opened is not None:
            raise reject(
                "already_opened",
                "Cuộc họp đã khai mạc và điểm danh lần đầu.",
                "The meeting is already open.",
            )
        assert self.start is not None
        if cmd.opened_at < self.start - EARLIEST_OPENING or cmd.opened_at > now + CLOCK_SKEW:
            raise _implausible("opened_at", cmd.opened_at)
        roll_call = _roll_call(cmd.roll_call, cell, cmd.opened_at, self._whole_cell)
        return [
            MeetingOpened(
                meeting_id=cmd.meeting_id,
                ward_id=cmd.ward_id,
                cell_id=cmd.cell_id,
                opened_at=cmd.opened_at,
                roll_call=roll_call,
                supervisor_present=cmd.supervisor_present,
            )
        ]

    def adopt_resolution(self, cmd: AdoptResolution, cell: Cell) -> list[DomainEvent]:
        self._require_scheduled(cmd.ward_id, cmd.cell_id)
        self._require_not_cancelled()
        opened = self._require_opened()
        if self.closed:
            # A resolution is adopted at the meeting, by the members present (domain.md);
            # its tasks are still completed afterwards (CompleteTask).
            raise reject(
                "meeting_closed",
                "Cuộc họp đã bế mạc, không thể thông qua nghị quyết.",
                "The meeting is closed; a resolution is adopted at the meeting.",
            )
        if cmd.resolution_id in self.resolutions:
            raise reject(
                "already_exists",
                f"Nghị quyết {cmd.resolution_id} đã được thông qua.",
                f"Resolution {cmd.resolution_id} is already adopted.",
            )
        voters, counted = vote_count(opened.roll_call, cell)
        votes = cmd.votes_for + cmd.votes_against + cmd.votes_abstain
        if votes > voters:
            raise reject(
                "votes_exceed_present",
                f"Tổng số phiếu ({votes}) vượt quá số đảng viên chính thức có mặt ({voters});"
                " đảng viên dự bị không biểu quyết.",
                f"{votes} votes but only {voters} full members present; probationary members"
                " do not vote.",
                votes=votes,
                voters=voters,
            )
        needed = counted // 2 + 1
        if cmd.votes_for < needed:
            raise reject(
                "not_adopted",
                f"Nghị quyết chưa được quá nửa số đảng viên chính thức của chi bộ ({counted},"
                " không tính người miễn sinh hoạt và người vắng có lý do) tán thành: cần ít"
                f" nhất {needed} phiếu tán thành.",
                f"A resolution needs more than half of the cell's full members ({counted}, not"
                f" counting exempt members and excused absences) in favour: at least {needed}"
                " votes for.",
                votes_for=cmd.votes_for,
                needed=needed,
                full_members=counted,
            )
        task_ids = [t.task_id for t in cmd.tasks]
        if len(set(task_ids)) != len(task_ids):
            raise _duplicate("task_id")
        return [ResolutionAdopted(**cmd.model_dump())]

    def complete_task(self, cmd: CompleteTask, now: datetime) -> list[DomainEvent]:
        self._require_scheduled(cmd.ward_id, cmd.cell_id)
        resolution = self.resolutions.get(cmd.resolution_id)
        if resolution is None or cmd.task_id not in {t.task_id for t in resolution.tasks}:
            raise reject(
                "unknown_task",
                "Không tìm thấy nhiệm vụ này trong nghị quyết.",
                "No such task in this resolution.",
            )
        if (cmd.resolution_id, cmd.task_id) in self.completed_tasks:
            raise reject(
                "already_completed",
                "Nhiệm vụ đã được ghi nhận hoàn thành.",
                "The task is already completed.",
            )
        assert self.opened is not None
        if not (
            self.opened.opened_at.astimezone(LOCAL_TZ).date()
            <= cmd.completed_on
            <= (now + CLOCK_SKEW).astimezone(LOCAL_TZ).date()
        ):
            raise _implausible("completed_on", cmd.completed_on)
        return [TaskCompleted(**cmd.model_dump())]

    def close(self, cmd: CloseMeeting, cell: Cell, now: datetime) -> list[DomainEvent]:
        self._require_scheduled(cmd.ward_id, cmd.cell_id)
        cell.require_registered(cmd.ward_id)
        self._require_not_cancelled()
        opened = self._require_opened()
        if self.closed:
            raise reject("already_closed", "Cuộc họp đã bế mạc.", "The meeting is closed.")
        if (
            not opened.opened_at
            < cmd.closed_at
            <= min(opened.opened_at + LONGEST_MEETING, now + CLOCK_SKEW)
        ):
            raise _implausible("closed_at", cmd.closed_at)
        second = None
        if cell.roll_calls == 2:
            if cmd.second_roll_call is None:
                raise reject(
                    "second_roll_call_required",
                    "Chi bộ này điểm danh hai lần: cần kết quả điểm danh cuối buổi.",
                    "This cell calls the roll twice: the second roll call is required.",
                )
            second = _roll_call(cmd.second_roll_call, cell, opened.opened_at, self._whole_cell)
        elif cmd.second_roll_call is not None:
            raise reject(
                "no_second_roll_call",
                "Chi bộ này chỉ điểm danh một lần.",
                "This cell calls the roll once.",
            )
        present = {e.member_id for e in opened.roll_call if e.status == Attendance.PRESENT}
        if len(set(cmd.speakers)) != len(cmd.speakers):
            raise _duplicate("speakers")
        if not set(cmd.speakers) <= present:
            raise reject(
                "speaker_not_present",
                "Người phát biểu phải là đảng viên có mặt.",
                "Every speaker must be a member present at the meeting.",
                speakers=sorted(set(cmd.speakers) - present),
            )
        return [MeetingClosed(**{**cmd.model_dump(), "second_roll_call": second})]

    @property
    def _whole_cell(self) -> bool:
        """The cell committee meets without the other members: its roll call is of those
        who attend, each a member of the cell; every other kind calls the whole cell."""
        return self.scheduled is None or self.scheduled.kind != MeetingKind.COMMITTEE

    # -- guards ------------------------------------------------------------------------
    def _require_scheduled(self, ward_id: str, cell_id: str) -> MeetingScheduled:
        if self.scheduled is None:
            raise reject(
                "unknown_meeting",
                f"Chưa có lịch họp {self.meeting_id}.",
                f"Meeting {self.meeting_id} is not scheduled.",
            )
        if (self.scheduled.ward_id, self.scheduled.cell_id) != (ward_id, cell_id):
            raise reject(
                "wrong_cell",
                "Cuộc họp không thuộc chi bộ này.",
                "The meeting belongs to another cell.",
            )
        return self.scheduled

    def _require_not_cancelled(self) -> None:
        if self.cancelled:
            raise reject(
                "meeting_cancelled",
                "Cuộc họp đã bị hủy.",
                "The meeting is cancelled.",
            )

    def _require_pending(self, ward_id: str, cell_id: str) -> None:
        self._require_scheduled(ward_id, cell_id)
        self._require_not_cancelled()
        if self.opened is not None:
            raise reject(
                "already_opened",
                "Cuộc họp đã diễn ra, không thể đổi lịch hay hủy.",
                "The meeting has begun; it can no longer be moved or cancelled.",
            )

    def _require_opened(self) -> MeetingOpened:
        if self.opened is None:
            raise reject(
                "not_opened",
                "Cuộc họp chưa khai mạc.",
                "The meeting has not been opened.",
            )
        return self.opened


def vote_count(roll_call: list[AttendanceEntry], cell: Cell) -> tuple[int, int]:
    """Who may vote on a resolution, and of how many its majority is taken.

    Only full members vote: probationary members have every right of a full member except
    to vote, stand and elect (Điều lệ Đảng, Điều 5). A resolution stands when more than
    half of the members called in (số đảng viên chính thức được triệu tập) vote for it,
    not counting those exempt from meetings nor those absent with a reason (Điều lệ Đảng,
    Điều 9; Quy định 24-QĐ/TW, 2021, 9.3.2). Returns (full members present, full members
    counted): those present plus those absent without a reason. A member no longer on the
    cell's roll (transferred out since the opening) is counted as neither."""
    voters = counted = 0
    for entry in roll_call:
        member = cell.members.get(entry.member_id)
        if member is None or member.status != MemberStatus.FULL:
            continue
        if entry.status == Attendance.PRESENT:
            voters += 1
            counted += 1
        elif entry.status == Attendance.ABSENT_UNEXCUSED:
            counted += 1
    return voters, counted


def _roll_call(
    entries: list[AttendanceEntry], cell: Cell, at: datetime, whole_cell: bool = True
) -> list[AttendanceEntry]:
    """Check a roll call against the cell's roll on that day, and list the exempt members
    the caller left out (they are listed, but not counted)."""
    if cell.registered is None:
        raise reject(
            "unknown_cell",
            f"Chi bộ {cell.cell_id} chưa được đăng ký.",
            f"Cell {cell.cell_id} is not registered.",
        )
    day = at.astimezone(LOCAL_TZ).date()
    seen: set[str] = set()
    for entry in entries:
        member = cell.members.get(entry.member_id)
        if member is None:
            raise reject(
                "not_a_member",
                f"Đảng viên {entry.member_id} không sinh hoạt tại chi bộ {cell.cell_id}.",
                f"Member {entry.member_id} is not in cell {cell.cell_id}.",
                member_id=entry.member_id,
            )
        if entry.member_id in seen:
            raise _duplicate("member_id", member_id=entry.member_id)
        seen.add(entry.member_id)
        exempt = member.exempt_on(day)
        if exempt != (entry.status == Attendance.EXEMPT):
            raise reject(
                "exemption_mismatch",
                f"Tình trạng miễn sinh hoạt của đảng viên {entry.member_id} không đúng.",
                f"Member {entry.member_id} is {'' if exempt else 'not '}exempt on {day}.",
                member_id=entry.member_id,
            )
        if entry.status == Attendance.ABSENT_EXCUSED and not entry.reason:
            raise reject(
                "reason_required",
                "Vắng có lý do cần ghi rõ lý do.",
                "An excused absence needs a reason.",
                member_id=entry.member_id,
            )
    if not whole_cell:
        return list(entries)
    missing = [m for m_id, m in cell.members.items() if m_id not in seen]
    not_exempt = [m.member_id for m in missing if not m.exempt_on(day)]
    if not_exempt:
        raise reject(
            "incomplete_roll_call",
            "Điểm danh còn thiếu đảng viên.",
            "The roll call leaves out members.",
            member_ids=sorted(not_exempt),
        )
    return [
        *entries,
        *(AttendanceEntry(member_id=m.member_id, status=Attendance.EXEMPT) for m in missing),
    ]


def _implausible(name: str, value: object) -> Exception:
    return reject(
        "implausible_time",
        "Thời gian ghi nhận không hợp lý.",
        f"{name} {value} is not plausible.",
        field=name,
    )


def _duplicate(name: str, **details: object) -> Exception:
    return reject(
        "duplicate_entry",
        "Có mục bị ghi trùng.",
        f"Duplicate {name}.",
        **details,
    )
