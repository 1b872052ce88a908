"""The ward's monthly report and the roll-up above it, computed from facts. Pure.

The rules (see docs/reports.md):
- A cell's regular meeting of the month is held when one of the month's regular meetings
  opened; its planned day is the cell's meeting day. Otherwise it is cancelled (with
  the reason) or simply not held.
- Members are those on the roll at the end of the month; exempt ones (on the day of the
  regular meeting, or its planned day) are counted apart.
- A held meeting's attendance denominator is the members its first roll call counted
  (present + excused + unexcused): the meetings service makes that roll call cover exactly
  the cell's roll that day, exempt members apart, so a member who joins or leaves later in
  the month does not move it.
- Attendance is rated on regular meetings, at the first roll call; thematic meetings are
  counted and scored. Committee (chi ủy) meetings are neither, nor are their resolutions.
- Petitions are those raised in the month; their state is taken at the cut-off (the end
  of the month, or now while it runs), following their stream's order. Who holds a
  petition is a unit id: the ward tier is the petition's own ward, whatever the ladder
  calls that rung (ward, commune, ...).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.reports.domain import facts
from services.reports.domain.report import (
    BANDS,
    Attendance,
    Band,
    CancelledReason,
    CellLine,
    Conduct,
    Figures,
    MeetingLine,
    Members,
    PetitionAction,
    Petitions,
    Quality,
    RecurringTopic,
    RegularMeetings,
    ReportStatus,
    Resolutions,
    RollupGroup,
    RollupReport,
    ThematicMeetings,
    UnitRef,
    WardReport,
    WardSummary,
)
from shared.clock import LOCAL_TZ, ReportMonth
from shared.contract.events import PetitionCategory
from shared.places import place_key

CATEGORIES = tuple(c.value for c in PetitionCategory)


class QualityRubric(BaseModel):
    """Points per criterion of a meeting of quality (out of 100), and the band limits.

    Provinces differ, so a deployment sets it (``REPORT_QUALITY_RUBRIC``, JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attendance: int = Field(default=30, ge=0, description="First roll call at or above the target.")
    no_unexcused_absence: int = Field(default=10, ge=0)
    duration: int = Field(default=20, ge=0, description="Lasted at least min_duration_minutes.")
    participation: int = Field(
        default=15, ge=0, description="Speakers ≥ min_participation of present."
    )
    minutes: int = Field(default=15, ge=0, description="The minutes book is complete.")
    previous_resolution: int = Field(
        default=10, ge=0, description="The previous resolution was carried out (or there was none)."
    )
    min_duration_minutes: int = Field(default=90, ge=1)
    min_participation: float = Field(default=0.1, gt=0, le=1)
    good_from: int = Field(default=90, description="Tốt at or above.")
    fair_from: int = Field(default=70, description="Khá at or above.")
    average_from: int = Field(default=50, description="Trung bình at or above; Kém below.")

    @model_validator(mode="after")
    def _adds_up(self) -> QualityRubric:
        total = (
            self.attendance
            + self.no_unexcused_absence
            + self.duration
            + self.participation
            + self.minutes
            + self.previous_resolution
        )
        if total != 100:
            raise ValueError(f"the criteria's points must add up to 100, not {total}")
        if not 0 < self.average_from < self.fair_from < self.good_from <= 100:
            raise ValueError("band limits must rise: average_from < fair_from < good_from")
        return self

    def band(self, score: int) -> Band:
        if score >= self.good_from:
            return "Tốt"
        if score >= self.fair_from:
            return "Khá"
        return "Trung bình" if score >= self.average_from else "Kém"


@dataclass(frozen=True)
class ReportPolicy:
    attendance_target: float = 0.9
    rubric: QualityRubric = field(default_factory=lambda: QualityRubric())


STATUS_LABELS = {
    "in_progress": "Tháng chưa kết thúc",
    "awaiting": "Chưa gửi, còn trong hạn",
    "overdue": "Quá hạn, chưa gửi",
    "submitted_on_time": "Đã gửi đúng hạn",
    "submitted_late": "Đã gửi muộn",
}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _local_day(at: datetime) -> date:
    return at.astimezone(LOCAL_TZ).date()


def _ref(unit: facts.Unit) -> UnitRef:
    return UnitRef(unit_id=unit.unit_id, name=unit.name, level=unit.level, parent_id=unit.parent_id)


def short_ward_name(ward: facts.Unit) -> str:
    """ "Đảng bộ phường Nam Ngạn" → "phường Nam Ngạn", to qualify cell names above a ward."""
    for prefix in ("Đảng bộ ", "Đảng ủy "):
        if ward.name.startswith(prefix):
            return ward.name.removeprefix(prefix)
    return ward.name


def status_of(
    month: ReportMonth, submission: facts.Submission | None, now: datetime
) -> ReportStatus:
    if submission is not None:
        state = "submitted_on_time" if submission.on_time else "submitted_late"
    elif now < month.end:
        state = "in_progress"
    else:
        state = "awaiting" if now < month.report_due_at else "overdue"
    return ReportStatus(
        state=state,  # type: ignore[arg-type]
        label_vi=STATUS_LABELS[state],
        due_at=month.report_due_at,
        submitted_at=submission.submitted_at if submission else None,
        submitted_by=submission.submitted_by if submission else None,
    )


# -- one meeting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scored:
    line: MeetingLine
    counted: int


def _counted(members: list[facts.Membership], day: date) -> tuple[int, int]:
    """(on the roll, exempt on the day)."""
    return len(members), sum(1 for m in members if m.exempt_on(day))


def _called(meeting: facts.Meeting) -> int:
    """A held meeting's denominator: the members its first roll call counted. The roll
    call covers the cell's roll on that day, exempt members apart, so it is neither the
    month-end roll nor moved by a member who joins or leaves after the meeting."""
    return meeting.present_first + meeting.absent_excused + meeting.absent_unexcused


def _score(meeting: facts.Meeting, cell: facts.Cell, policy: ReportPolicy) -> _Scored:
    """A held meeting's line (only those opened are scored)."""
    day = _local_day(meeting.opened_at) if meeting.opened_at else None
    counted = _called(meeting)
    duration = (
        int((meeting.closed_at - meeting.opened_at).total_seconds() // 60)
        if meeting.opened_at and meeting.closed_at
        else None
    )
    rate = _rate(meeting.present_first, counted) if day else None
    score = band = None
    criteria: dict[str, bool] = {}
    if day is not None and meeting.closed_at is not None:
        r = policy.rubric
        present = meeting.present_first
        criteria = {
            "attendance": rate is not None and rate >= policy.attendance_target,
            "no_unexcused_absence": meeting.absent_unexcused == 0,
            "duration": duration is not None and duration >= r.min_duration_minutes,
            "participation": present > 0
            and (meeting.speakers or 0) / present >= r.min_participation,
            "minutes": bool(meeting.minutes_recorded),
            "previous_resolution": meeting.previous_resolution_carried_out is not False,
        }
        score = sum(getattr(r, name) for name, met in criteria.items() if met)
        band = r.band(score)
    line = MeetingLine(
        meeting_id=meeting.meeting_id,
        cell_id=cell.cell_id,
        cell=cell.name,
        kind=meeting.kind,
        held_on=day,
        duration_minutes=duration,
        present_first_roll_call=meeting.present_first,
        counted=counted,
        rate=rate,
        speakers=meeting.speakers,
        minutes_recorded=meeting.minutes_recorded,
        previous_resolution_carried_out=meeting.previous_resolution_carried_out,
        score=score,
        band=band,
        criteria=criteria,
    )
    return _Scored(line, counted)


# -- one cell ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CellResult:
    line: CellLine
    ward: str  # the short ward name, to qualify the cell's name above the ward
    regular: facts.Meeting | None
    scored: list[MeetingLine]
    resolutions: list[facts.Resolution]
    petitions: list[facts.Petition]


def _cell(
    cell: facts.Cell,
    ward_name: str,
    month: ReportMonth,
    roll: list[facts.Membership],
    meetings: list[facts.Meeting],
    resolutions: list[facts.Resolution],
    petitions: list[facts.Petition],
    policy: ReportPolicy,
) -> _CellResult:
    in_month = [m for m in meetings if month.start <= m.first_scheduled_start < month.end]
    regulars = sorted(
        (m for m in in_month if m.kind == "regular"), key=lambda m: m.first_scheduled_start
    )
    held = [m for m in regulars if m.opened_at is not None]
    regular = held[0] if held else (regulars[0] if regulars else None)
    planned = date(month.year, month.month, cell.meeting_day)
    held_on = _local_day(regular.opened_at) if regular and regular.opened_at else None
    total, exempt = _counted(roll, held_on or planned)
    counted = _called(regular) if regular and held_on else total - exempt
    if held_on is None:
        cancelled = next((m for m in regulars if m.cancelled_reason), None)
        status = "cancelled" if cancelled else "not_held"
        cancel_reason = cancelled.cancelled_reason if cancelled else None
    else:
        status = (
            "held_on_planned_day"
            if held_on == planned
            else ("held_late" if held_on > planned else "held_early")
        )
        cancel_reason = None
    thematic = [m for m in in_month if m.kind == "thematic"]
    quarter = [
        m
        for m in meetings
        if m.kind == "thematic"
        and m.opened_at is not None
        and month.quarter_start() <= m.opened_at < month.end
    ]
    scored = [
        _score(m, cell, policy).line for m in in_month if m.opened_at and m.kind != "committee"
    ]
    # The cell's resolutions: its committee (chi ủy) agrees the agenda, the cell adopts.
    month_meetings = {m.meeting_id for m in in_month if m.kind != "committee"}
    month_resolutions = [r for r in resolutions if r.meeting_id in month_meetings]
    present = regular.present_first if regular and held_on else None
    rate = _rate(regular.present_first, counted) if regular and held_on else None
    regular_line = next((s for s in scored if regular and s.meeting_id == regular.meeting_id), None)
    line = CellLine(
        cell_id=cell.cell_id,
        name=cell.name,
        meeting_day=cell.meeting_day,
        roll_calls=cell.roll_calls,
        members=total,
        probationary=sum(1 for m in roll if m.probationary),
        exempt=exempt,
        counted=counted,
        regular=status,  # type: ignore[arg-type]
        held_on=held_on,
        rescheduled=any(m.reschedules for m in regulars),
        cancel_reason=cancel_reason,
        present_first_roll_call=present,
        absent_excused=regular.absent_excused if regular and held_on else 0,
        absent_unexcused=regular.absent_unexcused if regular and held_on else 0,
        present_second_roll_call=regular.present_second if regular and held_on else None,
        present_both_roll_calls=regular.present_both if regular and held_on else None,
        rate=rate,
        below_target=rate is not None and rate < policy.attendance_target,
        supervisor_present=bool(held_on and regular and regular.supervisor_present),
        thematic_scheduled=len(thematic),
        thematic_held=sum(1 for m in thematic if m.opened_at is not None),
        thematic_this_quarter=bool(quarter),
        resolutions=len(month_resolutions),
        tasks_assigned=sum(len(r.tasks) for r in month_resolutions),
        tasks_completed=sum(
            1
            for r in month_resolutions
            for t in r.tasks
            if t.completed_on and month.start.date() <= t.completed_on < month.end.date()
        ),
        petitions_raised=len(petitions),
        score=regular_line.score if regular_line else None,
        band=regular_line.band if regular_line else None,
    )
    return _CellResult(
        line, ward_name, regular if held_on else None, scored, month_resolutions, petitions
    )


# -- petitions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Escalation:
    from_holder_id: str | None
    step: facts.PetitionStep


@dataclass(frozen=True)
class _PetitionState:
    level: str  # the ladder's name of the level that holds it (as the meetings service has it)
    holder_id: str | None  # the unit that holds it: the cell, the ward, a unit above (or none)
    open: bool
    deadline_at: datetime
    acknowledged: bool
    reopened: bool
    resolved_at: str | None  # the level that resolved it, when its last word is a resolution
    resolved_by: str | None  # the unit that resolved it, likewise
    escalations: list[_Escalation]
    marked_overdue: bool


def petition_state(p: facts.Petition, cutoff: datetime) -> _PetitionState:
    """The petition as its stream stands at the cut-off. Steps are taken in stream order
    (``p.steps`` is in version order), not sorted by time: an upstream's clock may stamp a
    later step earlier, and the meetings service decided each step on the ones before it.
    The first step at or after the cut-off ends the walk."""
    level, open_, deadline = p.level, True, p.deadline_at
    holder: str | None = p.holder_id
    acknowledged = reopened = marked = False
    resolved_at: str | None = None
    resolved_by: str | None = None
    escalations = []
    for step in p.steps:
        if step.at >= cutoff:
            break
        if step.kind == "acknowledged":
            acknowledged = True
        elif step.kind == "resolved":
            open_, resolved_at, resolved_by = False, step.level or level, holder
        elif step.kind == "reopened":
            open_, resolved_at, resolved_by, reopened = True, None, None, True
            deadline = step.deadline_at or deadline
            # The meetings service gives it a fresh deadline at its level and marks it
            # overdue again only once that one passes (its open-petitions table holds the
            # new deadline), so the old mark no longer stands.
            marked = False
        elif step.kind == "escalated":
            escalations.append(_Escalation(holder, step))
            level = step.to_level or level
            holder = step.to_holder_id
            deadline = step.deadline_at or deadline
        elif step.kind == "marked_overdue":
            marked = True
    return _PetitionState(
        level,
        holder,
        open_,
        deadline,
        acknowledged,
        reopened,
        resolved_at,
        resolved_by,
        escalations,
        marked,
    )


def _recurring_topics(petitions: list[tuple[str, facts.Petition]]) -> list[RecurringTopic]:
    """The topics (ward, category, place as the meetings service compares it) of the
    petitions it flagged recurring, each with how often it was raised in the month: the
    same definition as ``recurring``, so there is a topic whenever that count is not 0."""
    topics: dict[tuple[str, str, str], list[tuple[str, facts.Petition]]] = {}
    for ward, p in sorted(petitions, key=lambda wp: (wp[1].raised_at, wp[1].petition_id)):
        topics.setdefault((p.ward_id, p.category, place_key(p.place)), []).append((ward, p))
    return [
        RecurringTopic(ward=raised[0][0], category=cat, place=raised[0][1].place, times=len(raised))
        for (_, cat, _), raised in topics.items()
        if any(p.recurring for _, p in raised)
    ]


def _petitions(petitions: list[tuple[str, facts.Petition]], cutoff: datetime) -> Petitions:
    """``petitions``: each with its ward's short name. The ward tier is the petition's own
    ward as holder, so a commune's petitions count like a ward's and a roll-up's totals
    are the sums of its wards'."""
    states = [(p, petition_state(p, cutoff)) for _, p in petitions]
    into_ward = [
        e.step for p, s in states for e in s.escalations if e.step.to_holder_id == p.ward_id
    ]
    return Petitions(
        raised=len(states),
        by_category={c: sum(1 for p, _ in states if p.category == c) for c in CATEGORIES},
        recurring=sum(1 for p, _ in states if p.recurring),
        recurring_topics=_recurring_topics(petitions),
        acknowledged=sum(1 for _, s in states if s.acknowledged),
        resolved_at_cell=sum(1 for p, s in states if not s.open and s.resolved_by == p.cell_id),
        reopened=sum(1 for _, s in states if s.reopened),
        escalated_to_ward=len(into_ward),
        escalated_to_ward_by_reason=dict(Counter(e.reason or "unknown" for e in into_ward)),
        resolved_by_ward=sum(1 for p, s in states if not s.open and s.resolved_by == p.ward_id),
        escalated_above_ward=sum(
            1 for p, s in states for e in s.escalations if e.from_holder_id == p.ward_id
        ),
        open_at_cell=sum(1 for p, s in states if s.open and s.holder_id == p.cell_id),
        open_at_ward=sum(1 for p, s in states if s.open and s.holder_id == p.ward_id),
        open_above_ward=sum(
            1 for p, s in states if s.open and s.holder_id not in (p.cell_id, p.ward_id)
        ),
        overdue=sum(
            1 for _, s in states if s.open and (s.marked_overdue or s.deadline_at < cutoff)
        ),
    )


# -- sums ----------------------------------------------------------------------------------


def _figures(
    results: list[_CellResult],
    month: ReportMonth,
    cutoff: datetime,
    policy: ReportPolicy,
    qualify: bool,
) -> Figures:
    def name(r: _CellResult) -> str:
        return f"{r.line.name} ({r.ward})" if qualify else r.line.name

    lines = [r.line for r in results]
    held = [r for r in results if r.line.held_on is not None]
    not_held = [r for r in results if r.line.held_on is None]
    # Only meetings whose second roll call is in: one still open at the cut-off (or whose
    # closing never came) has none yet, and would count its members as absent at the end.
    two = [
        r for r in held if r.line.roll_calls == 2 and r.line.present_second_roll_call is not None
    ]
    counted_held = sum(r.line.counted for r in held)
    present = sum(r.line.present_first_roll_call or 0 for r in held)
    below = [name(r) for r in held if r.line.below_target]
    scored = [m for r in results for m in r.scored]
    closed = [m for m in scored if m.score is not None]
    durations = [m.duration_minutes for m in scored if m.duration_minutes is not None]
    tasks = [t for r in results for res in r.resolutions for t in res.tasks]
    regulars = [r.regular for r in held if r.regular is not None]
    speakers = sum(m.speakers or 0 for m in scored)
    present_all = sum(m.present_first_roll_call for m in scored)
    return Figures(
        cells=len(lines),
        members=Members(
            total=sum(c.members for c in lines),
            probationary=sum(c.probationary for c in lines),
            exempt=sum(c.exempt for c in lines),
            counted=sum(c.counted for c in lines),
        ),
        regular_meetings=RegularMeetings(
            scheduled=len(lines),
            held=len(held),
            held_on_planned_day=sum(1 for c in lines if c.regular == "held_on_planned_day"),
            held_early=sum(1 for c in lines if c.regular == "held_early"),
            held_late=sum(1 for c in lines if c.regular == "held_late"),
            not_held=len(not_held),
            not_held_cells=[name(r) for r in not_held],
            cancelled=sum(1 for c in lines if c.regular == "cancelled"),
            cancelled_reasons=[
                CancelledReason(cell=name(r), reason=r.line.cancel_reason or "")
                for r in results
                if r.line.regular == "cancelled"
            ],
            rescheduled=sum(1 for c in lines if c.rescheduled),
            supervisor_present=sum(1 for c in lines if c.supervisor_present),
            supervisor_rate=_rate(sum(1 for c in lines if c.supervisor_present), len(held)),
        ),
        thematic_meetings=ThematicMeetings(
            scheduled=sum(c.thematic_scheduled for c in lines),
            held=sum(c.thematic_held for c in lines),
            cells_with_thematic_this_quarter=sum(1 for c in lines if c.thematic_this_quarter),
            cells_without_thematic_this_quarter=[
                name(r) for r in results if not r.line.thematic_this_quarter
            ],
        ),
        attendance=Attendance(
            members_counted=counted_held,
            present_first_roll_call=present,
            absent_excused=sum(r.line.absent_excused for r in held),
            absent_unexcused=sum(r.line.absent_unexcused for r in held),
            rate=_rate(present, counted_held),
            target=policy.attendance_target,
            two_roll_call_cells_held=len(two),
            members_counted_two_roll_calls=sum(r.line.counted for r in two),
            present_second_roll_call=sum(r.line.present_second_roll_call or 0 for r in two),
            present_both_roll_calls=sum(r.line.present_both_roll_calls or 0 for r in two),
            rate_both_roll_calls=_rate(
                sum(r.line.present_both_roll_calls or 0 for r in two),
                sum(r.line.counted for r in two),
            ),
            cells_below_target=len(below),
            cells_below_target_names=below,
        ),
        conduct=Conduct(
            meetings_held=len(scored),
            speakers=speakers,
            present=present_all,
            participation_rate=_rate(speakers, present_all),
            average_duration_minutes=round(sum(durations) / len(durations), 1)
            if durations
            else None,
            meetings_at_least_min_duration=sum(
                1 for d in durations if d >= policy.rubric.min_duration_minutes
            ),
            minutes_recorded=sum(1 for m in scored if m.minutes_recorded),
            minutes_missing=sum(1 for m in scored if m.minutes_recorded is False),
        ),
        quality=Quality(
            meetings_scored=len(closed),
            average_score=round(sum(m.score or 0 for m in closed) / len(closed), 1)
            if closed
            else None,
            bands={b: sum(1 for m in closed if m.band == b) for b in BANDS},
        ),
        resolutions=Resolutions(
            adopted=sum(c.resolutions for c in lines),
            tasks_assigned=sum(c.tasks_assigned for c in lines),
            tasks_completed=sum(c.tasks_completed for c in lines),
            tasks_overdue=sum(
                1
                for t in tasks
                if t.due_on < _local_day(cutoff)
                and (t.completed_on is None or t.completed_on >= _local_day(cutoff))
            ),
            previous_resolution_carried_out=sum(
                1 for m in regulars if m.previous_resolution_carried_out is True
            ),
            previous_resolution_not_carried_out=sum(
                1 for m in regulars if m.previous_resolution_carried_out is False
            ),
        ),
        petitions=_petitions([(r.ward, p) for r in results for p in r.petitions], cutoff),
    )


# -- the reports ---------------------------------------------------------------------------


def _by(items: Iterable[object], attr: str) -> dict[str, list]:  # type: ignore[type-arg]
    grouped: dict[str, list] = {}  # type: ignore[type-arg]
    for item in items:
        grouped.setdefault(getattr(item, attr), []).append(item)
    return grouped


def _cells(
    ward_facts: facts.WardFacts, month: ReportMonth, cutoff: datetime, policy: ReportPolicy
) -> list[_CellResult]:
    roll = [m for m in ward_facts.memberships if m.on_roll_at(month.end)]
    rolls = _by(roll, "cell_id")
    meetings = _by(ward_facts.meetings, "cell_id")
    resolutions = _by(ward_facts.resolutions, "cell_id")
    petitions = _by(
        (p for p in ward_facts.petitions if month.start <= p.raised_at < month.end), "cell_id"
    )
    ward_name = short_ward_name(ward_facts.ward)
    return [
        _cell(
            cell,
            ward_name,
            month,
            rolls.get(cell.cell_id, []),
            meetings.get(cell.cell_id, []),
            resolutions.get(cell.cell_id, []),
            petitions.get(cell.cell_id, []),
            policy,
        )
        for cell in sorted(ward_facts.cells, key=lambda c: c.name)
    ]


def cutoff_of(month: ReportMonth, now: datetime) -> datetime:
    return min(now, month.end)


def ward_report(
    ward_facts: facts.WardFacts,
    parents: list[facts.Unit],
    month: ReportMonth,
    now: datetime,
    policy: ReportPolicy,
) -> WardReport:
    cutoff = cutoff_of(month, now)
    results = _cells(ward_facts, month, cutoff, policy)
    ward = ward_facts.ward
    names = {c.cell_id: c.name for c in ward_facts.cells}
    needing = []
    for p in ward_facts.petitions:
        state = petition_state(p, now)
        if state.open and state.holder_id == ward.unit_id:
            needing.append(
                PetitionAction(
                    petition_id=p.petition_id,
                    cell=names.get(p.cell_id, p.cell_id),
                    category=p.category,
                    place=p.place,
                    raised_at=p.raised_at,
                    deadline_at=state.deadline_at,
                    overdue=state.deadline_at < now,
                )
            )
    return WardReport(
        title=f"Báo cáo kết quả sinh hoạt chi bộ tháng {month.month:02d}/{month.year}",
        unit=_ref(ward),
        parents=[_ref(u) for u in parents],
        month=month.label,
        period_start=month.start,
        period_end=month.end,
        as_of=cutoff,
        generated_at=now,
        status=status_of(month, ward_facts.submission, now),
        figures=_figures(results, month, cutoff, policy, qualify=False),
        cells=[r.line for r in results],
        meetings=sorted(
            (m for r in results for m in r.scored), key=lambda m: (m.held_on or date.min, m.cell)
        ),
        petitions_needing_ward_action=sorted(needing, key=lambda a: a.deadline_at),
    )


def rollup_report(
    unit: facts.Unit,
    parents: list[facts.Unit],
    wards: list[facts.WardFacts],
    chains: dict[str, list[facts.Unit]],
    month: ReportMonth,
    now: datetime,
    policy: ReportPolicy,
) -> RollupReport:
    """Totals over every ward below ``unit``; ``chains`` gives each ward's units between
    it and ``unit`` (nearest first), for the intermediate levels' totals."""
    cutoff = cutoff_of(month, now)
    per_ward = [(w, _cells(w, month, cutoff, policy)) for w in wards]
    groups: dict[str, tuple[facts.Unit, list[_CellResult], int]] = {}
    for w, results in per_ward:
        for between in chains.get(w.ward.unit_id, []):
            unit_, cells, n = groups.get(between.unit_id, (between, [], 0))
            groups[between.unit_id] = (unit_, cells + results, n + 1)
    statuses = [status_of(month, w.submission, now) for w, _ in per_ward]
    return RollupReport(
        title=f"Báo cáo tổng hợp kết quả sinh hoạt chi bộ tháng {month.month:02d}/{month.year}",
        unit=_ref(unit),
        parents=[_ref(u) for u in parents],
        month=month.label,
        period_start=month.start,
        period_end=month.end,
        as_of=cutoff,
        generated_at=now,
        reports_submitted_on_time=sum(1 for s in statuses if s.state == "submitted_on_time"),
        reports_submitted_late=sum(1 for s in statuses if s.state == "submitted_late"),
        reports_missing=sum(1 for s in statuses if not s.state.startswith("submitted")),
        figures=_figures(
            [r for _, results in per_ward for r in results],
            month,
            cutoff,
            policy,
            qualify=True,
        ),
        groups=[
            RollupGroup(
                unit=_ref(u),
                wards=n,
                figures=_figures(cells, month, cutoff, policy, qualify=True),
            )
            for u, cells, n in sorted(groups.values(), key=lambda g: g[0].name)
        ],
        wards=[
            WardSummary(
                unit=_ref(w.ward),
                status=status,
                figures=_figures(results, month, cutoff, policy, qualify=False),
            )
            for (w, results), status in zip(per_ward, statuses, strict=True)
        ],
    )
