"""The monthly report's published shape (JSON schema: docs/report.schema.json).

Field names are English; every text a person reads (names, reasons, status labels) is
Vietnamese. Rates are fractions rounded to 4 places, ``null`` when nothing was counted.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WARD_SCHEMA: Literal["chibo-ward-report/1"] = "chibo-ward-report/1"
ROLLUP_SCHEMA: Literal["chibo-rollup-report/1"] = "chibo-rollup-report/1"

Band = Literal["Tốt", "Khá", "Trung bình", "Kém"]
BANDS: tuple[Band, ...] = ("Tốt", "Khá", "Trung bình", "Kém")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UnitRef(_Model):
    unit_id: str
    name: str
    level: str
    parent_id: str | None


class Members(_Model):
    total: int = Field(description="On the cells' rolls at the end of the month.")
    probationary: int
    exempt: int = Field(description="Exempt on the day of the regular meeting.")
    counted: int = Field(
        description="Who had to attend the regular meeting: at a held one, those its first"
        " roll call counted (present + excused + unexcused: on the roll that day, not"
        " exempt); where it was not held, total − exempt."
    )


class CancelledReason(_Model):
    cell: str
    reason: str


class RegularMeetings(_Model):
    scheduled: int
    held: int
    held_on_planned_day: int
    held_early: int
    held_late: int
    not_held: int
    not_held_cells: list[str]
    cancelled: int = Field(description="The not-held ones that were cancelled, with reason.")
    cancelled_reasons: list[CancelledReason]
    rescheduled: int
    supervisor_present: int = Field(description="Held meetings the ward member attended.")
    supervisor_rate: float | None


class ThematicMeetings(_Model):
    scheduled: int
    held: int
    cells_with_thematic_this_quarter: int
    cells_without_thematic_this_quarter: list[str]


class Attendance(_Model):
    members_counted: int = Field(
        description="The held regular meetings' first roll calls: present + excused +"
        " unexcused (the members on the roll that day, not exempt)."
    )
    present_first_roll_call: int
    absent_excused: int
    absent_unexcused: int
    rate: float | None
    target: float
    two_roll_call_cells_held: int = Field(
        description="Held regular meetings of cells that call the roll twice whose second"
        " roll call is in (closed): the figures below are over these."
    )
    members_counted_two_roll_calls: int
    present_second_roll_call: int
    present_both_roll_calls: int
    rate_both_roll_calls: float | None
    cells_below_target: int
    cells_below_target_names: list[str]


class Conduct(_Model):
    """How the held meetings (both kinds) were run."""

    meetings_held: int
    speakers: int
    present: int
    participation_rate: float | None = Field(description="Speakers over those present.")
    average_duration_minutes: float | None
    meetings_at_least_min_duration: int
    minutes_recorded: int
    minutes_missing: int


class Quality(_Model):
    meetings_scored: int
    average_score: float | None
    bands: dict[str, int] = Field(description="Meetings per band: Tốt, Khá, Trung bình, Kém.")


class Resolutions(_Model):
    adopted: int
    tasks_assigned: int
    tasks_completed: int = Field(description="Completed within the month.")
    tasks_overdue: int = Field(description="Past due at the cut-off and not completed.")
    previous_resolution_carried_out: int
    previous_resolution_not_carried_out: int


class RecurringTopic(_Model):
    """A topic (category and place, compared as the meetings service compares them) of a
    petition it flagged recurring."""

    ward: str = Field(description="The ward's short name: 'phường Nam Ngạn'.")
    category: str
    place: str = Field(description="As first written this month.")
    times: int = Field(description="Petitions raised on it this month.")


class Petitions(_Model):
    raised: int
    by_category: dict[str, int]
    recurring: int = Field(description="Flagged recurring by the meetings service.")
    recurring_topics: list[RecurringTopic]
    acknowledged: int
    resolved_at_cell: int
    reopened: int
    escalated_to_ward: int = Field(
        description="Sent up to the ward tier: to its own ward (or commune) as holder."
    )
    escalated_to_ward_by_reason: dict[str, int]
    resolved_by_ward: int
    escalated_above_ward: int
    open_at_cell: int
    open_at_ward: int = Field(description="Open and held by its ward (or commune).")
    open_above_ward: int
    overdue: int = Field(description="Open at the cut-off with their deadline passed.")


class Figures(_Model):
    cells: int
    members: Members
    regular_meetings: RegularMeetings
    thematic_meetings: ThematicMeetings
    attendance: Attendance
    conduct: Conduct
    quality: Quality
    resolutions: Resolutions
    petitions: Petitions


class MeetingLine(_Model):
    meeting_id: str
    cell_id: str
    cell: str
    kind: str
    held_on: date | None
    duration_minutes: int | None
    present_first_roll_call: int
    counted: int = Field(description="Present + excused + unexcused at the first roll call.")
    rate: float | None
    speakers: int | None
    minutes_recorded: bool | None
    previous_resolution_carried_out: bool | None
    score: int | None
    band: Band | None
    criteria: dict[str, bool] = Field(description="Each rubric criterion: met or not.")


class CellLine(_Model):
    cell_id: str
    name: str
    meeting_day: int
    roll_calls: int
    members: int
    probationary: int
    exempt: int
    counted: int = Field(
        description="Had to attend the regular meeting: present + excused + unexcused at"
        " its first roll call when held; members − exempt otherwise."
    )
    regular: Literal["held_on_planned_day", "held_early", "held_late", "not_held", "cancelled"]
    held_on: date | None
    rescheduled: bool
    cancel_reason: str | None
    present_first_roll_call: int | None
    absent_excused: int
    absent_unexcused: int
    present_second_roll_call: int | None
    present_both_roll_calls: int | None
    rate: float | None
    below_target: bool
    supervisor_present: bool
    thematic_scheduled: int
    thematic_held: int
    thematic_this_quarter: bool
    resolutions: int
    tasks_assigned: int
    tasks_completed: int
    petitions_raised: int
    score: int | None
    band: Band | None


class PetitionAction(_Model):
    """An open petition the ward holds: it must answer or send it up."""

    petition_id: str
    cell: str
    category: str
    place: str
    raised_at: datetime
    deadline_at: datetime
    overdue: bool


class ReportStatus(_Model):
    state: Literal["in_progress", "awaiting", "overdue", "submitted_on_time", "submitted_late"]
    label_vi: str
    due_at: datetime = Field(description="The 10th of the next month, 00:00 Asia/Ho_Chi_Minh.")
    submitted_at: datetime | None
    submitted_by: str | None


class WardReport(_Model):
    schema_id: Literal["chibo-ward-report/1"] = Field(default=WARD_SCHEMA, alias="schema")
    title: str
    unit: UnitRef
    parents: list[UnitRef] = Field(description="The units above, nearest first.")
    month: str
    period_start: datetime
    period_end: datetime
    as_of: datetime = Field(description="Facts up to here: the month's end, or now.")
    generated_at: datetime
    status: ReportStatus
    figures: Figures
    cells: list[CellLine]
    meetings: list[MeetingLine]
    petitions_needing_ward_action: list[PetitionAction]

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class WardSummary(_Model):
    unit: UnitRef
    status: ReportStatus
    figures: Figures


class RollupGroup(_Model):
    """A unit between the roll-up's unit and the wards (a district, say), with its totals."""

    unit: UnitRef
    wards: int
    figures: Figures


class RollupReport(_Model):
    schema_id: Literal["chibo-rollup-report/1"] = Field(default=ROLLUP_SCHEMA, alias="schema")
    title: str
    unit: UnitRef
    parents: list[UnitRef]
    month: str
    period_start: datetime
    period_end: datetime
    as_of: datetime
    generated_at: datetime
    reports_submitted_on_time: int
    reports_submitted_late: int
    reports_missing: int
    figures: Figures = Field(description="Totals over every ward below the unit.")
    groups: list[RollupGroup] = Field(description="Each level between, with its totals.")
    wards: list[WardSummary]

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
