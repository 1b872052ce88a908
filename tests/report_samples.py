"""Realistic monthly reports built from the published models, for tests of what reads or
renders them: Nam Ngạn ward (Thanh Hóa city, seed 002) in October 2026, a roll-up of the
city, a roll-up of the province with the city as a group, and an empty ward."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from services.reports.domain.report import (
    BANDS,
    Attendance,
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

MONTH = ReportMonth("2026-10")
GENERATED_AT = datetime(2026, 11, 5, 9, 30, tzinfo=LOCAL_TZ)

PROVINCE = UnitRef(
    unit_id="th.thanh-hoa", name="Đảng bộ tỉnh Thanh Hóa", level="province", parent_id=None
)
CITY = UnitRef(
    unit_id="th.tp-thanh-hoa",
    name="Đảng bộ thành phố Thanh Hóa",
    level="district",
    parent_id=PROVINCE.unit_id,
)


def ward_ref(slug: str, name: str) -> UnitRef:
    return UnitRef(unit_id=f"th.{slug}", name=name, level="ward", parent_id=CITY.unit_id)


NAM_NGAN = ward_ref("nam-ngan", "Đảng bộ phường Nam Ngạn")

# (name, members, probationary, exempt, present, excused, unexcused, regular, score)
_CELLS = [
    ("Chi bộ phố Nguyễn Mộng Tuân 1", 32, 1, 4, 26, 2, 0, "held_on_planned_day", 95),
    ("Chi bộ phố Nguyễn Mộng Tuân 2", 41, 2, 6, 35, 0, 0, "held_on_planned_day", 100),
    ("Chi bộ phố Bà Triệu", 28, 0, 3, 21, 3, 1, "held_late", 70),
    ("Chi bộ phố Lê Thánh Tông", 25, 1, 2, 22, 1, 0, "held_early", 85),
    ("Chi bộ phố Trường Thi", 19, 0, 2, 0, 0, 0, "cancelled", None),
    ("Chi bộ phố Đông Sơn", 22, 1, 1, 0, 0, 0, "not_held", None),
    # A long name, to check that the tables wrap it instead of running off the page.
    ("Chi bộ khu dân cư số 7 (phố Nguyễn Trãi, ngõ 126 và khu tập thể Công ty Xây lắp "
     "điện Thanh Hóa)", 36, 3, 5, 24, 4, 3, "held_on_planned_day", 45),
]  # fmt: skip
CANCEL_REASON = "Trùng lịch bầu cử tổ trưởng tổ dân phố; dời sang tháng 11"


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _band(score: int | None) -> str | None:
    if score is None:
        return None
    return (
        "Tốt" if score >= 90 else "Khá" if score >= 70 else "Trung bình" if score >= 50 else "Kém"
    )


def cell_lines() -> list[CellLine]:
    lines = []
    for i, (name, members, prob, exempt, present, exc, unexc, regular, score) in enumerate(_CELLS):
        held = regular.startswith("held")
        day = {"held_on_planned_day": 3, "held_early": 2, "held_late": 6}.get(regular)
        counted = members - exempt
        rate = _rate(present, counted) if held else None
        lines.append(
            CellLine(
                cell_id=f"th.nam-ngan.cb{i + 1:02d}",
                name=name,
                meeting_day=3,
                roll_calls=2 if i < 2 else 1,
                members=members,
                probationary=prob,
                exempt=exempt,
                counted=counted,
                regular=regular,  # type: ignore[arg-type]
                held_on=date(2026, 10, day) if day else None,
                rescheduled=regular == "held_late",
                cancel_reason=CANCEL_REASON if regular == "cancelled" else None,
                present_first_roll_call=present if held else None,
                absent_excused=exc,
                absent_unexcused=unexc,
                present_second_roll_call=present - 1 if held and i < 2 else None,
                present_both_roll_calls=present - 1 if held and i < 2 else None,
                rate=rate,
                below_target=rate is not None and rate < 0.9,
                supervisor_present=held and i != 3,
                thematic_scheduled=1 if i == 1 else 0,
                thematic_held=1 if i == 1 else 0,
                thematic_this_quarter=i in (0, 1, 3),
                resolutions=1 if held else 0,
                tasks_assigned=3 if held else 0,
                tasks_completed=2 if held else 0,
                petitions_raised=(2, 3, 1, 0, 0, 0, 2)[i],
                score=score,
                band=_band(score),  # type: ignore[arg-type]
            )
        )
    return lines


def meeting_lines(cells: list[CellLine]) -> list[MeetingLine]:
    lines = []
    for c in cells:
        if c.score is None:
            continue
        criteria = {
            "attendance": not c.below_target,
            "no_unexcused_absence": c.absent_unexcused == 0,
            "duration": (c.score or 0) >= 70,
            "participation": True,
            "minutes": (c.score or 0) >= 50,
            "previous_resolution": (c.score or 0) >= 85,
        }
        lines.append(
            MeetingLine(
                meeting_id=f"{c.cell_id}.2026-10.regular",
                cell_id=c.cell_id,
                cell=c.name,
                kind="regular",
                held_on=c.held_on,
                duration_minutes=95 if criteria["duration"] else 60,
                present_first_roll_call=c.present_first_roll_call or 0,
                counted=c.counted,
                rate=c.rate,
                speakers=7,
                minutes_recorded=criteria["minutes"],
                previous_resolution_carried_out=criteria["previous_resolution"],
                score=c.score,
                band=c.band,
                criteria=criteria,
            )
        )
    thematic = cells[1]
    lines.append(
        MeetingLine(
            meeting_id=f"{thematic.cell_id}.2026-10.thematic",
            cell_id=thematic.cell_id,
            cell=thematic.name,
            kind="thematic",
            held_on=date(2026, 10, 17),
            duration_minutes=None,  # not closed yet: no duration, no score
            present_first_roll_call=30,
            counted=thematic.counted,
            rate=_rate(30, thematic.counted),
            speakers=None,
            minutes_recorded=None,
            previous_resolution_carried_out=None,
            score=None,
            band=None,
            criteria={},
        )
    )
    return lines


def figures_of(cells: list[CellLine], meetings: list[MeetingLine], scale: int = 1) -> Figures:
    """Totals over the cells; ``scale`` multiplies the counts, to make other wards."""
    held = [c for c in cells if c.present_first_roll_call is not None]
    counted = sum(c.counted for c in held) * scale
    present = sum(c.present_first_roll_call or 0 for c in held) * scale
    scored = [m for m in meetings if m.score is not None]
    below = [c.name for c in cells if c.below_target]
    return Figures(
        cells=len(cells) * scale,
        members=Members(
            total=sum(c.members for c in cells) * scale,
            probationary=sum(c.probationary for c in cells) * scale,
            exempt=sum(c.exempt for c in cells) * scale,
            counted=sum(c.counted for c in cells) * scale,
        ),
        regular_meetings=RegularMeetings(
            scheduled=len(cells) * scale,
            held=len(held) * scale,
            held_on_planned_day=sum(c.regular == "held_on_planned_day" for c in cells) * scale,
            held_early=sum(c.regular == "held_early" for c in cells) * scale,
            held_late=sum(c.regular == "held_late" for c in cells) * scale,
            not_held=(len(cells) - len(held)) * scale,
            not_held_cells=[c.name for c in cells if c.present_first_roll_call is None],
            cancelled=sum(c.regular == "cancelled" for c in cells) * scale,
            cancelled_reasons=[
                CancelledReason(cell=c.name, reason=c.cancel_reason)
                for c in cells
                if c.cancel_reason
            ],
            rescheduled=sum(c.rescheduled for c in cells) * scale,
            supervisor_present=sum(c.supervisor_present for c in cells) * scale,
            supervisor_rate=_rate(sum(c.supervisor_present for c in cells), len(held)),
        ),
        thematic_meetings=ThematicMeetings(
            scheduled=1 * scale,
            held=1 * scale,
            cells_with_thematic_this_quarter=sum(c.thematic_this_quarter for c in cells) * scale,
            cells_without_thematic_this_quarter=[
                c.name for c in cells if not c.thematic_this_quarter
            ],
        ),
        attendance=Attendance(
            members_counted=counted,
            present_first_roll_call=present,
            absent_excused=sum(c.absent_excused for c in held) * scale,
            absent_unexcused=sum(c.absent_unexcused for c in held) * scale,
            rate=_rate(present, counted),
            target=0.9,
            two_roll_call_cells_held=2 * scale,
            members_counted_two_roll_calls=63 * scale,
            present_second_roll_call=59 * scale,
            present_both_roll_calls=59 * scale,
            rate_both_roll_calls=_rate(59, 63),
            cells_below_target=len(below) * scale,
            cells_below_target_names=below,
        ),
        conduct=Conduct(
            meetings_held=(len(held) + 1) * scale,
            speakers=35 * scale,
            present=(present // scale + 30) * scale,
            participation_rate=_rate(35, present // scale + 30),
            average_duration_minutes=86.2,
            meetings_at_least_min_duration=3 * scale,
            minutes_recorded=4 * scale,
            minutes_missing=1 * scale,
        ),
        quality=Quality(
            meetings_scored=len(scored) * scale,
            average_score=round(sum(m.score or 0 for m in scored) / len(scored), 1),
            bands={b: sum(m.band == b for m in scored) * scale for b in BANDS},
        ),
        resolutions=Resolutions(
            adopted=len(held) * scale,
            tasks_assigned=3 * len(held) * scale,
            tasks_completed=2 * len(held) * scale,
            tasks_overdue=2 * scale,
            previous_resolution_carried_out=3 * scale,
            previous_resolution_not_carried_out=2 * scale,
        ),
        petitions=Petitions(
            raised=8 * scale,
            by_category={
                "land": 2 * scale,
                "roads_infrastructure": 3 * scale,
                "security_order": 1 * scale,
                "environment": 1 * scale,
                "social_policy": 1 * scale,
                "other": 0,
            },
            recurring=2 * scale,
            recurring_topics=[
                RecurringTopic(
                    ward="phường Nam Ngạn",
                    category="roads_infrastructure",
                    place="Ngõ 126 Nguyễn Trãi (đoạn ngập úng khi mưa lớn)",
                    times=3,
                ),
                RecurringTopic(
                    ward="phường Nam Ngạn",
                    category="environment",
                    place="Bãi rác tạm phố Bà Triệu",
                    times=2,
                ),
            ],
            acknowledged=7 * scale,
            resolved_at_cell=3 * scale,
            reopened=0,
            escalated_to_ward=3 * scale,
            escalated_to_ward_by_reason={"beyond_authority": 2 * scale, "deadline": 1 * scale},
            resolved_by_ward=1 * scale,
            escalated_above_ward=0,
            open_at_cell=2 * scale,
            open_at_ward=2 * scale,
            open_above_ward=0,
            overdue=1 * scale,
        ),
    )


def status(state: str, submitted_at: datetime | None = None) -> ReportStatus:
    labels = {
        "in_progress": "Tháng chưa kết thúc",
        "awaiting": "Chưa gửi, còn trong hạn",
        "overdue": "Quá hạn, chưa gửi",
        "submitted_on_time": "Đã gửi đúng hạn",
        "submitted_late": "Đã gửi muộn",
    }
    return ReportStatus(
        state=state,  # type: ignore[arg-type]
        label_vi=labels[state],
        due_at=MONTH.report_due_at,
        submitted_at=submitted_at,
        submitted_by="nguyen-thi-thuy-quyen" if submitted_at else None,
    )


def ward_report() -> WardReport:
    cells = cell_lines()
    meetings = meeting_lines(cells)
    return WardReport(
        title=f"Báo cáo kết quả sinh hoạt chi bộ tháng {MONTH.month:02d}/{MONTH.year}",
        unit=NAM_NGAN,
        parents=[CITY, PROVINCE],
        month=MONTH.label,
        period_start=MONTH.start,
        period_end=MONTH.end,
        as_of=MONTH.end,
        generated_at=GENERATED_AT,
        status=status("submitted_on_time", datetime(2026, 11, 4, 16, 20, tzinfo=LOCAL_TZ)),
        figures=figures_of(cells, meetings),
        cells=cells,
        meetings=sorted(meetings, key=lambda m: (m.held_on or date.min, m.cell)),
        petitions_needing_ward_action=[
            PetitionAction(
                petition_id="pt-2026-10-0007",
                cell=cells[6].name,
                category="roads_infrastructure",
                place="Ngõ 126 Nguyễn Trãi",
                raised_at=datetime(2026, 10, 3, 20, 15, tzinfo=LOCAL_TZ),
                deadline_at=datetime(2026, 10, 25, tzinfo=LOCAL_TZ),
                overdue=True,
            ),
            PetitionAction(
                petition_id="pt-2026-10-0003",
                cell=cells[0].name,
                category="land",
                place="Đất công cạnh nhà văn hóa phố Nguyễn Mộng Tuân",
                raised_at=datetime(2026, 10, 3, 19, 40, tzinfo=LOCAL_TZ),
                deadline_at=datetime(2026, 11, 8, tzinfo=LOCAL_TZ),
                overdue=False,
            ),
        ],
    )


def empty_ward_report() -> WardReport:
    """A new ward with no cells yet, mid-month: every list empty, every rate null."""
    cells: list[CellLine] = []
    zero = Figures.model_validate(
        {
            "cells": 0,
            "members": Members(total=0, probationary=0, exempt=0, counted=0),
            "regular_meetings": RegularMeetings(
                scheduled=0, held=0, held_on_planned_day=0, held_early=0, held_late=0,
                not_held=0, not_held_cells=[], cancelled=0, cancelled_reasons=[],
                rescheduled=0, supervisor_present=0, supervisor_rate=None,
            ),
            "thematic_meetings": ThematicMeetings(
                scheduled=0, held=0, cells_with_thematic_this_quarter=0,
                cells_without_thematic_this_quarter=[],
            ),
            "attendance": Attendance(
                members_counted=0, present_first_roll_call=0, absent_excused=0,
                absent_unexcused=0, rate=None, target=0.9, two_roll_call_cells_held=0,
                members_counted_two_roll_calls=0, present_second_roll_call=0,
                present_both_roll_calls=0, rate_both_roll_calls=None, cells_below_target=0,
                cells_below_target_names=[],
            ),
            "conduct": Conduct(
                meetings_held=0, speakers=0, present=0, participation_rate=None,
                average_duration_minutes=None, meetings_at_least_min_duration=0,
                minutes_recorded=0, minutes_missing=0,
            ),
            "quality": Quality(meetings_scored=0, average_score=None, bands={b: 0 for b in BANDS}),
            "resolutions": Resolutions(
                adopted=0, tasks_assigned=0, tasks_completed=0, tasks_overdue=0,
                previous_resolution_carried_out=0, previous_resolution_not_carried_out=0,
            ),
            "petitions": Petitions(
                raised=0, by_category={}, recurring=0, recurring_topics=[], acknowledged=0,
                resolved_at_cell=0, reopened=0, escalated_to_ward=0,
                escalated_to_ward_by_reason={}, resolved_by_ward=0, escalated_above_ward=0,
                open_at_cell=0, open_at_ward=0, open_above_ward=0, overdue=0,
            ),
        }
    )  # fmt: skip
    now = MONTH.start + timedelta(days=12)
    return WardReport(
        title="Báo cáo kết quả sinh hoạt chi bộ tháng 10/2026",
        unit=ward_ref("moi", "Đảng bộ xã Thiệu Vân"),
        parents=[],
        month=MONTH.label,
        period_start=MONTH.start,
        period_end=MONTH.end,
        as_of=now,
        generated_at=now,
        status=status("in_progress"),
        figures=zero,
        cells=cells,
        meetings=[],
        petitions_needing_ward_action=[],
    )


_OTHER_WARDS = [
    ("dien-bien", "Đảng bộ phường Điện Biên", 2, "submitted_late", datetime(2026, 11, 12, 8, 5)),
    ("ba-dinh", "Đảng bộ phường Ba Đình", 1, "submitted_on_time", datetime(2026, 11, 7, 14, 0)),
    ("ham-rong", "Đảng bộ phường Hàm Rồng", 3, "overdue", None),
    ("thieu-duong", "Đảng bộ xã Thiệu Dương", 2, "submitted_on_time", datetime(2026, 11, 9, 23)),
]  # fmt: skip


def ward_summaries() -> list[WardSummary]:
    nam_ngan = ward_report()
    summaries = [WardSummary(unit=nam_ngan.unit, status=nam_ngan.status, figures=nam_ngan.figures)]
    cells = cell_lines()
    meetings = meeting_lines(cells)
    for slug, name, scale, state, at in _OTHER_WARDS:
        summaries.append(
            WardSummary(
                unit=ward_ref(slug, name),
                status=status(state, at.replace(tzinfo=LOCAL_TZ) if at else None),
                figures=figures_of(cells, meetings, scale=scale),
            )
        )
    return summaries


def _rollup(unit: UnitRef, parents: list[UnitRef], groups: list[RollupGroup]) -> RollupReport:
    wards = ward_summaries()
    cells = cell_lines()
    states = [w.status.state for w in wards]
    return RollupReport(
        title=f"Báo cáo tổng hợp kết quả sinh hoạt chi bộ tháng {MONTH.month:02d}/{MONTH.year}",
        unit=unit,
        parents=parents,
        month=MONTH.label,
        period_start=MONTH.start,
        period_end=MONTH.end,
        as_of=MONTH.end,
        generated_at=datetime(2026, 11, 12, 10, 0, tzinfo=LOCAL_TZ),
        reports_submitted_on_time=states.count("submitted_on_time"),
        reports_submitted_late=states.count("submitted_late"),
        reports_missing=sum(not s.startswith("submitted") for s in states),
        # Totals as if nine copies of Nam Ngạn: close enough for a layout.
        figures=figures_of(cells, meeting_lines(cells), scale=9),
        groups=groups,
        wards=wards,
    )


def rollup_report() -> RollupReport:
    """Thanh Hóa city over its wards (no level in between)."""
    return _rollup(CITY, [PROVINCE], [])


def province_rollup_report() -> RollupReport:
    """Thanh Hóa province with the city as the level in between."""
    cells = cell_lines()
    group = RollupGroup(unit=CITY, wards=5, figures=figures_of(cells, meeting_lines(cells), 9))
    return _rollup(PROVINCE, [], [group])
