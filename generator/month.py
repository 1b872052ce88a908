"""One month of the district's cells, in Asia/Ho_Chi_Minh: the regular meeting of each cell
(most on the planned day, some late, some missed), thematic meetings for about a third
of the cells, roll calls, resolutions and tasks, and the petitions raised at meetings with
what became of them within the month.

After the meetings, a few members change cells inside the month (``RollChange``): one
moves to another cell of the ward, or a new member is admitted, after the meetings of the
cells concerned, so a meeting's roll call and the month-end roll differ.

Every time here is a local, timezone-aware datetime inside the month. The service stamps
petitions with its own clock when they arrive (``raised_at``), so the times kept on
petitions only order the commands; no expected figure depends on them.
"""

from __future__ import annotations

import calendar
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from generator.model import Cell, District, Member, Ward, person_name
from shared.contract.events import PetitionCategory

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

PRESENT = "present"
EXCUSED = "absent_excused"
UNEXCUSED = "absent_unexcused"
EXEMPT = "exempt"

CATEGORIES = tuple(c.value for c in PetitionCategory)  # in the contract's order (seeded draws)
_PETITION_TEXTS = {
    "land": (
        "Đề nghị giải quyết dứt điểm việc cấp giấy chứng nhận quyền sử dụng đất cho các hộ"
        " tại {place}.",
        "Phản ánh tình trạng lấn chiếm đất công, đất hành lang giao thông tại {place}.",
    ),
    "roads_infrastructure": (
        "Mặt đường tại {place} xuống cấp, nhiều ổ gà, đề nghị sớm sửa chữa.",
        "Đề nghị lắp đặt hệ thống đèn chiếu sáng tại {place}.",
    ),
    "security_order": (
        "Thanh thiếu niên tụ tập, đua xe vào ban đêm tại {place}, đề nghị tăng cường tuần tra.",
        "Phản ánh tình trạng trộm cắp vặt xảy ra nhiều lần tại {place}.",
    ),
    "environment": (
        "Rác thải tồn đọng, không được thu gom đúng giờ tại {place}.",
        "Cống thoát nước tại {place} bị tắc, gây ngập úng mỗi khi mưa lớn.",
    ),
    "social_policy": (
        "Đề nghị xem xét hỗ trợ các hộ cận nghèo tại {place}.",
        "Đề nghị sớm giải quyết chế độ cho người có công với cách mạng tại {place}.",
    ),
    "other": (
        "Đề nghị bố trí kinh phí sửa chữa, nâng cấp nhà văn hóa tại {place}.",
        "Đề nghị tổ chức lớp tập huấn chuyển đổi số cho người dân tại {place}.",
    ),
}
_EXCUSES = (
    "Ốm, có báo cáo chi ủy",
    "Đi công tác",
    "Việc gia đình, đã xin phép",
    "Đi làm ca đêm",
    "Chăm người nhà ốm tại bệnh viện",
)
_CANCEL_REASONS = (
    "Trùng lịch bầu cử đại biểu Hội đồng nhân dân, chi bộ dời sang tháng sau",
    "Mưa bão, ngập úng cục bộ, không bảo đảm an toàn",
    "Nhà văn hóa đang sửa chữa, chưa bố trí được địa điểm",
    "Bí thư chi bộ ốm, chi ủy chưa thống nhất được nội dung",
)
_RESCHEDULE_REASONS = (
    "Trùng lịch họp của tổ dân phố",
    "Theo đề nghị của Đảng ủy, để đồng chí phụ trách dự",
    "Nhà văn hóa có việc hiếu, lùi lịch sinh hoạt",
    "Mất điện diện rộng",
)
_THEMES = (
    "Học tập và làm theo tư tưởng, đạo đức, phong cách Hồ Chí Minh",
    "Nâng cao chất lượng sinh hoạt chi bộ",
    "Công tác bảo vệ môi trường ở khu dân cư",
    "Chuyển đổi số ở khu dân cư",
    "Phòng, chống tệ nạn xã hội trong thanh thiếu niên",
)
_TASKS = (
    "Vận động các hộ gia đình thu gom, phân loại rác thải tại nguồn",
    "Rà soát, lập danh sách hộ cận nghèo trình Ủy ban nhân dân phường",
    "Tổ chức tổng vệ sinh đường làng, ngõ xóm",
    "Vận động đoàn viên, hội viên tham gia tuần tra an ninh",
    "Hoàn thành thu đảng phí và quỹ vì người nghèo",
    "Kiểm tra, sửa chữa hệ thống loa truyền thanh",
    "Phối hợp với ban công tác Mặt trận chuẩn bị ngày hội đại đoàn kết",
    "Nắm tình hình đảng viên miễn sinh hoạt, báo cáo Đảng ủy",
    "Tuyên truyền thực hiện nếp sống văn minh trong việc cưới, việc tang",
)
_RESPONSES = (
    "Chi bộ đã phối hợp với tổ dân phố xử lý xong, người dân đồng tình.",
    "Đã làm việc với các hộ liên quan; sự việc được khắc phục.",
    "Ban công tác Mặt trận và chi hội đã vận động, giải quyết tại cơ sở.",
)


@dataclass(frozen=True)
class RollEntry:
    member_id: str
    status: str  # PRESENT, EXCUSED, UNEXCUSED or EXEMPT
    reason: str | None = None


@dataclass
class Task:
    task_id: str
    description: str
    assignee: str
    due_on: date
    completed_at: datetime | None = None  # local; its date is ``completed_on``


@dataclass
class Resolution:
    resolution_id: str
    title: str
    votes_for: int
    votes_against: int
    votes_abstain: int
    tasks: list[Task]
    adopted_at: datetime


@dataclass
class Petition:
    petition_id: str
    ward_id: str
    cell_id: str
    meeting_id: str
    category: str
    place: str
    raised_by: str
    text: str
    raised_at: datetime  # orders the commands only; the service stamps its own time
    meant_recurring: bool  # raised again: same category and place as an earlier one
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None  # resolved at the cell
    response: str | None = None
    escalated_at: datetime | None = None  # sent to the ward by hand: beyond the cell
    escalation_note: str | None = None
    reopened_at: datetime | None = None  # residents not satisfied with the response
    reopen_reason: str | None = None


@dataclass
class Meeting:
    meeting_id: str
    ward_id: str
    cell_id: str
    kind: str  # "regular" or "thematic"
    scheduled_at: datetime  # when the schedule was sent
    scheduled_start: datetime
    agenda: list[str]
    location: str
    orientation_id: str | None
    rescheduled_at: datetime | None = None
    rescheduled_start: datetime | None = None
    reschedule_reason: str | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    opened_at: datetime | None = None  # None: never opened
    roll_call: list[RollEntry] = field(default_factory=list)
    supervisor_present: bool = False
    resolutions: list[Resolution] = field(default_factory=list)
    closed_at: datetime | None = None
    second_roll_call: list[RollEntry] | None = None
    speakers: list[str] = field(default_factory=list)
    minutes_recorded: bool = True
    previous_resolution_carried_out: bool | None = None
    petitions: list[Petition] = field(default_factory=list)


@dataclass(frozen=True)
class RollChange:
    """A change to a ward's rolls inside the month, after every meeting of the cells it
    touches (their roll calls were of the roll before it): ``member`` moves from
    ``from_cell`` to ``to_cell``, or, with no ``from_cell``, is newly admitted there."""

    at: datetime
    ward_id: str
    member: Member
    to_cell: str
    from_cell: str | None = None


@dataclass
class Month:
    year: int
    month: int
    meetings: list[Meeting]
    roll_changes: list[RollChange] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        return date(self.year, self.month, calendar.monthrange(self.year, self.month)[1])

    @property
    def petitions(self) -> list[Petition]:
        return [p for m in self.meetings for p in m.petitions]


def previous_month(now: datetime) -> tuple[int, int]:
    """The month before ``now``'s, in Asia/Ho_Chi_Minh: the latest month wholly past."""
    local = now.astimezone(LOCAL_TZ)
    return (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)


def parse_month(text: str) -> tuple[int, int]:
    year, _, month = text.partition("-")
    y, m = int(year), int(month)
    if not 1 <= m <= 12:
        raise ValueError(f"not a month: {text!r} (want YYYY-MM)")
    if not 2000 <= y <= 2099:  # the contract's years (shared/contract/types.py)
        raise ValueError(f"not a month of the contract's years 2000-2099: {text!r}")
    return y, m


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), LOCAL_TZ)


def generate_month(district: District, year: int, month: int) -> Month:
    month_obj = Month(year, month, [])
    for ward in district.wards:
        rng = random.Random(f"chibo-generator:{district.config.seed}:{year}-{month}:{ward.unit_id}")
        meetings: list[Meeting] = []
        for cell in ward.cells:
            meetings.append(_regular(rng, ward, cell, month_obj))
            if rng.random() < 0.34:  # one thematic meeting a quarter: a third of cells a month
                meetings.append(_thematic(rng, ward, cell, month_obj))
        _petitions(rng, ward, meetings, month_obj)
        month_obj.meetings += meetings
    month_obj.roll_changes = _roll_changes(district, month_obj)
    return month_obj


# -- the rolls, after the meetings ----------------------------------------------------


def _roll_changes(district: District, month: Month) -> list[RollChange]:
    """In about one ward in five (at least one), a member present at their cell's regular
    meeting moves to another cell of the ward; in as many others, a new (probationary)
    member is admitted to a cell that met. Each after the meetings of the cells involved.
    A random source of its own, so the rest of the month is drawn as before."""
    rng = random.Random(f"chibo-generator:{district.config.seed}:{month.label}:roll-changes")
    meetings: dict[str, list[Meeting]] = {}
    for m in month.meetings:
        meetings.setdefault(m.cell_id, []).append(m)
    latest = at(month.last_day, 22)

    def held(cell: Cell) -> Meeting | None:
        regular = next(m for m in meetings[cell.cell_id] if m.kind == "regular")
        return regular if regular.opened_at is not None else None

    def after(*cells: Cell) -> datetime | None:
        ends = [m.closed_at for c in cells for m in meetings[c.cell_id] if m.closed_at]
        day = max(ends).date() + timedelta(days=rng.randint(1, 3))  # office hours, days later
        when = at(day, rng.randint(8, 16), rng.randint(0, 59))
        return when if when <= latest else None

    n = max(1, len(district.wards) // 5)
    changes: list[RollChange] = []
    for ward in rng.sample(district.wards, min(n, len(district.wards))):
        for src in rng.sample(ward.cells, len(ward.cells)):
            regular = held(src)
            if regular is None or len(src.members) <= 10:
                continue
            present = {e.member_id for e in regular.roll_call if e.status == PRESENT}
            movers = [
                m
                for m in src.members
                if m.member_id in present
                and m.role is None
                and not m.exemptions
                and m.transferred_from is None
            ]
            targets = [c for c in ward.cells if c is not src and len(c.members) < 40 and held(c)]
            if not movers or not targets:
                continue
            dst = rng.choice(targets)
            when = after(src, dst)
            if when is not None:
                member = rng.choice(movers)
                changes.append(RollChange(when, ward.unit_id, member, dst.cell_id, src.cell_id))
                break
    for ward in rng.sample(district.wards, min(n, len(district.wards))):
        for cell in rng.sample(ward.cells, len(ward.cells)):
            when = after(cell) if held(cell) and len(cell.members) < 40 else None
            if when is not None:
                female = rng.random() < 0.4
                member = Member(
                    f"{cell.cell_id}.dv{month.label.replace('-', '')}",
                    person_name(rng, female),
                    probationary=True,
                )
                changes.append(RollChange(when, ward.unit_id, member, cell.cell_id))
                break
    return sorted(changes, key=lambda c: c.at)


# -- meetings -------------------------------------------------------------------------


def _regular(rng: random.Random, ward: Ward, cell: Cell, month: Month) -> Meeting:
    planned = date(month.year, month.month, cell.meeting_day)
    evening = ward.kind == "phường" or rng.random() < 0.5
    start = at(planned, 19, 30) if evening else at(planned, 14, 0)
    label = month.label
    meeting = Meeting(
        meeting_id=f"{cell.cell_id}.{label.replace('-', '')}.tk",
        ward_id=ward.unit_id,
        cell_id=cell.cell_id,
        kind="regular",
        scheduled_at=_scheduled_at(rng, month),
        scheduled_start=start,
        agenda=[
            f"Đánh giá kết quả thực hiện nhiệm vụ tháng {_prev(month)}",
            f"Phương hướng, nhiệm vụ tháng {month.month}/{month.year}",
            "Thông tin thời sự, quán triệt định hướng sinh hoạt của Đảng ủy",
            "Tiếp nhận ý kiến, kiến nghị của đảng viên và Nhân dân",
        ],
        location=cell.location,
        # Not linked to the ward's orientation: it cannot be issued once the month is over
        # (orientation.py, ``month_over``), and a month not over cannot be held yet.
        orientation_id=None,
    )
    fate = rng.random()
    if fate < 0.04:  # cancelled with a reason, the day before
        meeting.cancelled_at = start - timedelta(hours=rng.randint(20, 30))
        meeting.cancel_reason = rng.choice(_CANCEL_REASONS)
        return meeting
    if fate < 0.07:  # scheduled, never held, nobody cancelled it
        return meeting
    opened = start + timedelta(minutes=rng.randint(0, 15))
    if fate < 0.15:  # held late, a few days after the planned day
        late = start + timedelta(days=rng.randint(1, 5))
        if rng.random() < 0.7:  # usually moved formally, the day before
            meeting.rescheduled_at = start - timedelta(hours=rng.randint(2, 20))
            meeting.rescheduled_start = late
            meeting.reschedule_reason = rng.choice(_RESCHEDULE_REASONS)
        opened = late + timedelta(minutes=rng.randint(0, 15))
    _hold(rng, ward, cell, meeting, opened, poor=rng.random() < 0.18)
    return meeting


def _thematic(rng: random.Random, ward: Ward, cell: Cell, month: Month) -> Meeting:
    day = min(28, cell.meeting_day + rng.randint(7, 14))
    start = at(date(month.year, month.month, day), 8, 0)
    theme = rng.choice(_THEMES)
    meeting = Meeting(
        meeting_id=f"{cell.cell_id}.{month.label.replace('-', '')}.cd",
        ward_id=ward.unit_id,
        cell_id=cell.cell_id,
        kind="thematic",
        scheduled_at=_scheduled_at(rng, month),
        scheduled_start=start,
        agenda=[f"Sinh hoạt chuyên đề: {theme}", "Thảo luận, liên hệ thực tiễn ở khu dân cư"],
        location=cell.location,
        orientation_id=None,
    )
    _hold(rng, ward, cell, meeting, start + timedelta(minutes=rng.randint(0, 10)), poor=False)
    if meeting.resolutions:
        meeting.resolutions[0].title = f"Nghị quyết chuyên đề: {theme}"
    return meeting


def _scheduled_at(rng: random.Random, month: Month) -> datetime:
    """Before the 1st, when the ward's orientation for the month reaches the cells."""
    return at(month.first_day - timedelta(days=rng.randint(1, 4)), 9) + timedelta(
        minutes=rng.randint(0, 480)
    )


def _prev(month: Month) -> str:
    return "12" if month.month == 1 else str(month.month - 1)


def _hold(
    rng: random.Random, ward: Ward, cell: Cell, meeting: Meeting, opened: datetime, poor: bool
) -> None:
    day = opened.date()
    meeting.opened_at = opened
    counted = [m for m in cell.members if not m.exempt_on(day)]
    # Most cells reach the 90 % target; a poor turnout leaves it well below.
    n = len(counted)
    absent_n = rng.randint(-(-n * 11 // 100), max(-(-n * 11 // 100), n * 30 // 100))
    if not poor:
        absent_n = rng.randint(0, n // 10)
    chairs = [m for m in counted if m.role is not None]  # the secretary and deputy attend
    absentees = set(
        m.member_id for m in rng.sample([m for m in counted if m.role is None], absent_n)
    )
    roll: list[RollEntry] = []
    for member in cell.members:
        if member.exempt_on(day):
            if cell.lists_exempt:
                roll.append(RollEntry(member.member_id, EXEMPT))
        elif member.member_id in absentees:
            if rng.random() < 0.7:
                roll.append(RollEntry(member.member_id, EXCUSED, rng.choice(_EXCUSES)))
            else:
                roll.append(RollEntry(member.member_id, UNEXCUSED))
        else:
            roll.append(RollEntry(member.member_id, PRESENT))
    rng.shuffle(roll)  # the roll call's order is not the roll's order
    meeting.roll_call = roll
    meeting.supervisor_present = rng.random() < (0.6 if meeting.kind == "regular" else 0.8)
    present = [m for m in cell.members if m.member_id not in absentees and not m.exempt_on(day)]
    duration = timedelta(minutes=rng.randint(75, 150))
    meeting.closed_at = opened + duration
    if cell.roll_calls == 2:
        meeting.second_roll_call = _second_roll_call(rng, cell, roll, chairs)
    k = min(len(present), rng.randint(2, 6))
    meeting.speakers = [m.member_id for m in rng.sample(present, k)]
    meeting.minutes_recorded = rng.random() < 0.96
    meeting.previous_resolution_carried_out = rng.choices([True, False, None], [85, 10, 5])[0]
    if rng.random() < (0.9 if meeting.kind == "regular" else 0.5):
        resolution = _resolution(rng, ward, cell, meeting, present, day)
        if resolution is not None:
            meeting.resolutions.append(resolution)


def _second_roll_call(
    rng: random.Random, cell: Cell, first: list[RollEntry], chairs: list[Member]
) -> list[RollEntry]:
    """At the close: a few leave early, now and then a latecomer is there at the end."""
    chair_ids = {m.member_id for m in chairs}
    second = []
    for entry in first:
        if entry.status == PRESENT and entry.member_id not in chair_ids and rng.random() < 0.05:
            if rng.random() < 0.6:
                second.append(RollEntry(entry.member_id, EXCUSED, "Về sớm, có việc gia đình"))
            else:
                second.append(RollEntry(entry.member_id, UNEXCUSED))
        elif entry.status in (EXCUSED, UNEXCUSED) and rng.random() < 0.15:
            second.append(RollEntry(entry.member_id, PRESENT))  # came late
        else:
            second.append(entry)
    return second


def _resolution(
    rng: random.Random,
    ward: Ward,
    cell: Cell,
    meeting: Meeting,
    present: list[Member],
    day: date,
) -> Resolution | None:
    """The resolution the meeting adopts, or None if too few full members are there to
    adopt one. Only full members vote, and more than half of the full members called in
    (present, or absent without a reason) must vote for it (meetings' domain/meeting.py)."""
    assert meeting.opened_at is not None and meeting.closed_at is not None
    p = len(present)
    # Drawn on everyone present, as before the rule counted only full members: the rest
    # of the month is then drawn as it was.
    against = rng.choices([0, 1, 2], [80, 15, 5])[0] if p >= 8 else 0
    abstain = rng.choices([0, 1], [85, 15])[0] if p >= 8 else 0
    not_voting = rng.choices([0, 1], [90, 10])[0] if p >= 6 else 0
    full = {m.member_id for m in cell.members if not m.probationary}
    voters = sum(1 for m in present if m.member_id in full)
    counted = voters + sum(
        1 for e in meeting.roll_call if e.status == UNEXCUSED and e.member_id in full
    )
    needed = counted // 2 + 1
    against = min(against, max(0, voters - needed))
    abstain = min(abstain, max(0, voters - needed - against))
    not_voting = min(not_voting, max(0, voters - needed - against - abstain))
    votes_for = voters - against - abstain - not_voting
    if votes_for < needed:
        return None
    tasks = []
    month_end = date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])
    for t, description in enumerate(rng.sample(_TASKS, rng.randint(1, 3)), start=1):
        assignee = rng.choice(["Chi ủy chi bộ", *(m.full_name for m in present[:5])])
        task = Task(f"t{t}", description, assignee, day + timedelta(days=rng.randint(7, 30)))
        if rng.random() < 0.4:
            done = day + timedelta(days=rng.randint(1, 12))
            if done <= month_end:
                task.completed_at = at(done, rng.randint(8, 17), rng.randint(0, 59))
        tasks.append(task)
    title = f"Nghị quyết sinh hoạt chi bộ tháng {day.month}/{day.year}"
    return Resolution(
        resolution_id=f"{meeting.meeting_id}.nq",
        title=title,
        votes_for=votes_for,
        votes_against=against,
        votes_abstain=abstain,
        tasks=tasks,
        adopted_at=meeting.closed_at - timedelta(minutes=10),
    )


# -- petitions ------------------------------------------------------------------------


def _place(rng: random.Random, ward: Ward, cell: Cell) -> str:
    street = rng.choice(ward.streets)
    if ward.kind == "phường":
        return rng.choice(
            [
                f"Ngõ {rng.randint(2, 120)} phố {street}",
                f"Phố {street}, đoạn trước số nhà {rng.randint(1, 250)}",
                f"Nhà văn hóa {cell.place}",
                f"Chợ {ward.short_name}",
            ]
        )
    return rng.choice(
        [
            f"Đường liên thôn {street}, đoạn qua xóm {rng.randint(1, 12)}",
            f"Kênh tiêu thôn {street}",
            f"Nhà văn hóa {cell.place}",
            f"Cánh đồng thôn {street}, xứ đồng số {rng.randint(1, 20)}",
        ]
    )


def _petitions(rng: random.Random, ward: Ward, meetings: list[Meeting], month: Month) -> None:
    """Petitions at the ward's held regular meetings, in time order, so that a recurring one
    repeats the category and place of one raised earlier in the ward."""
    cells = {c.cell_id: c for c in ward.cells}
    held = sorted(
        (m for m in meetings if m.kind == "regular" and m.opened_at is not None),
        key=lambda m: (m.opened_at, m.meeting_id),
    )
    seen: list[tuple[str, str]] = []
    month_end = at(month.last_day, 23, 0)
    for meeting in held:
        assert meeting.opened_at is not None and meeting.closed_at is not None
        cell = cells[meeting.cell_id]
        present = {e.member_id for e in meeting.roll_call if e.status == PRESENT}
        members = [m for m in cell.members if m.member_id in present]
        for n in range(1, rng.choices([0, 1, 2, 3], [20, 35, 30, 15])[0] + 1):
            recurring = bool(seen) and rng.random() < 0.12
            if recurring:
                category, place = rng.choice(seen)
            else:
                for _ in range(50):
                    category = rng.choices(CATEGORIES, [12, 30, 15, 22, 14, 7])[0]
                    place = _place(rng, ward, cell)
                    if (category, place) not in seen:
                        break
                else:  # pragma: no cover - a pool of thousands of places per ward
                    raise RuntimeError("no fresh petition place")
            seen.append((category, place))
            if rng.random() < 0.5 and members:
                raised_by = f"Đảng viên {rng.choice(members).full_name}"
            else:
                title = rng.choice(["Ông", "Bà"])
                raised_by = f"{title} {person_name(rng, title == 'Bà')}, cử tri {cell.place}"
            text = rng.choice(_PETITION_TEXTS[category]).format(place=place)
            if recurring:
                text += " Cử tri đã kiến nghị nội dung này nhiều lần nhưng chưa được giải quyết."
            raised_at = meeting.opened_at + timedelta(minutes=30 + 7 * n)
            petition = Petition(
                petition_id=f"{meeting.meeting_id}.kn{n}",
                ward_id=ward.unit_id,
                cell_id=cell.cell_id,
                meeting_id=meeting.meeting_id,
                category=category,
                place=place,
                raised_by=raised_by,
                text=text,
                raised_at=raised_at,
                meant_recurring=recurring,
            )
            _follow_up(rng, petition, meeting.closed_at, month_end)
            meeting.petitions.append(petition)


def _follow_up(rng: random.Random, p: Petition, closed_at: datetime, month_end: datetime) -> None:
    """What became of it within the month: acknowledged, resolved at the cell (and now and
    then reopened), sent up by hand as beyond the cell's authority, or still open."""

    def later(after: datetime, days: tuple[int, int]) -> datetime | None:
        t = at(after.date() + timedelta(days=rng.randint(*days)), rng.randint(8, 16))
        return t if t <= month_end else None

    if rng.random() < 0.6:
        p.acknowledged_at = later(closed_at, (1, 2))
    base = p.acknowledged_at or closed_at
    fate = rng.random()
    escalate_p = 0.35 if p.meant_recurring or p.category == "land" else 0.08
    if fate < escalate_p:
        p.escalated_at = later(base, (1, 6))
        p.escalation_note = "Vượt thẩm quyền của chi bộ, đề nghị Đảng ủy xem xét, giải quyết"
    elif fate < escalate_p + 0.4:
        p.resolved_at = later(base, (2, 10))
        if p.resolved_at is not None:
            p.response = rng.choice(_RESPONSES)
            if rng.random() < 0.06:
                p.reopened_at = later(p.resolved_at, (2, 5))
                if p.reopened_at is not None:
                    p.reopen_reason = "Cử tri chưa đồng tình với kết quả giải quyết"
