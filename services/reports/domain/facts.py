"""What the projections know, as plain values: the inputs of a monthly report.

Times are the source's times (the envelope's ``occurred_at``, or the time a payload
carries, such as a meeting's ``opened_at``), so a month recorded late is still reported
as the month it happened in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True)
class Unit:
    unit_id: str
    level: str
    name: str
    parent_id: str | None


@dataclass(frozen=True)
class Cell:
    cell_id: str
    ward_id: str
    name: str
    meeting_day: int
    roll_calls: int


@dataclass(frozen=True)
class Exemption:
    exempt_from: date
    exempt_until: date | None  # open-ended (old age) when None; inclusive otherwise

    def covers(self, day: date) -> bool:
        return self.exempt_from <= day and (self.exempt_until is None or day <= self.exempt_until)


@dataclass(frozen=True)
class Membership:
    """One stay of a member on a cell's roll."""

    member_id: str
    cell_id: str
    probationary: bool
    admitted_at: datetime
    left_at: datetime | None
    exemptions: tuple[Exemption, ...] = ()

    def on_roll_at(self, at: datetime) -> bool:
        return self.admitted_at < at and (self.left_at is None or self.left_at >= at)

    def exempt_on(self, day: date) -> bool:
        return any(e.covers(day) for e in self.exemptions)


@dataclass(frozen=True)
class Meeting:
    meeting_id: str
    ward_id: str
    cell_id: str
    kind: str  # "regular", "thematic", "committee"
    first_scheduled_start: datetime
    scheduled_start: datetime
    reschedules: int
    cancelled_reason: str | None
    opened_at: datetime | None
    closed_at: datetime | None
    supervisor_present: bool | None
    present_first: int
    absent_excused: int
    absent_unexcused: int
    present_second: int | None  # None: one roll call, or not closed
    present_both: int | None
    speakers: int | None
    minutes_recorded: bool | None
    previous_resolution_carried_out: bool | None


@dataclass(frozen=True)
class Task:
    task_id: str
    due_on: date
    completed_on: date | None


@dataclass(frozen=True)
class Resolution:
    resolution_id: str
    meeting_id: str
    cell_id: str
    title: str
    tasks: tuple[Task, ...]


@dataclass(frozen=True)
class PetitionStep:
    """One thing that happened to a petition after it was raised."""

    at: datetime  # the source's time
    kind: str  # acknowledged, resolved, escalated, marked_overdue, reopened
    level: str | None  # the level it was held at (resolved, acknowledged, reopened)
    to_level: str | None = None  # escalated
    to_holder_id: str | None = None
    reason: str | None = None  # escalated: deadline / beyond_authority
    deadline_at: datetime | None = None  # the new deadline (escalated, reopened)


@dataclass(frozen=True)
class Petition:
    petition_id: str
    ward_id: str
    cell_id: str
    category: str
    place: str
    raised_at: datetime
    level: str
    holder_id: str
    deadline_at: datetime
    recurring: bool
    # In stream (version) order, which the report follows: the steps' times come from
    # their senders' clocks and may disagree with it.
    steps: tuple[PetitionStep, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Submission:
    ward_id: str
    month: str
    submitted_at: datetime
    due_at: datetime
    on_time: bool
    submitted_by: str


@dataclass(frozen=True)
class WardFacts:
    """Everything one ward's report for one month is built from."""

    ward: Unit
    cells: list[Cell]
    memberships: list[Membership]
    meetings: list[Meeting]  # the month's, and the quarter's thematic ones
    resolutions: list[Resolution]
    petitions: list[Petition]  # raised up to the report's cut-off
    submission: Submission | None
