"""The monthly report's rules, from plain facts: planned day, exempt members, the quality
rubric and its bands, petitions at the cut-off, and the report's status."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.reports.domain import facts
from services.reports.domain.monthly_report import (
    QualityRubric,
    ReportPolicy,
    petition_state,
    rollup_report,
    status_of,
    ward_report,
)
from shared.clock import LOCAL_TZ, ReportMonth

OCT = ReportMonth("2026-10")
WARD = facts.Unit("nam-ngan", "ward", "Đảng bộ phường Nam Ngạn", "thanh-hoa")
CITY = facts.Unit("thanh-hoa", "district", "Đảng bộ thành phố Thanh Hóa", None)
CELL = facts.Cell("cb1", "nam-ngan", "Chi bộ phố Lê Lai 1", meeting_day=3, roll_calls=2)
BEFORE = datetime(2026, 9, 20, tzinfo=LOCAL_TZ)


def at(day: int, hour: int = 19, minute: int = 0) -> datetime:
    return datetime(2026, 10, day, hour, minute, tzinfo=LOCAL_TZ)


def members(n: int, exempt: int = 0) -> list[facts.Membership]:
    ex = (facts.Exemption(date(2026, 1, 1), None),)
    return [
        facts.Membership(f"m{i}", "cb1", i == 0, BEFORE, None, ex if i >= n - exempt else ())
        for i in range(n)
    ]


def meeting(**over: object) -> facts.Meeting:
    base: dict[str, object] = dict(
        meeting_id="mt1",
        ward_id="nam-ngan",
        cell_id="cb1",
        kind="regular",
        first_scheduled_start=at(3),
        scheduled_start=at(3),
        reschedules=0,
        cancelled_reason=None,
        opened_at=at(3),
        closed_at=at(3, 20, 40),
        supervisor_present=True,
        present_first=18,
        absent_excused=2,
        absent_unexcused=0,
        present_second=17,
        present_both=17,
        speakers=4,
        minutes_recorded=True,
        previous_resolution_carried_out=True,
    )
    return facts.Meeting(**{**base, **over})  # type: ignore[arg-type]


def report(meetings: list[facts.Meeting], roll: list[facts.Membership], **kw: object):  # type: ignore[no-untyped-def]
    ward_facts = facts.WardFacts(WARD, [CELL], roll, meetings, [], [], None)
    now = kw.get("now", datetime(2026, 11, 5, tzinfo=LOCAL_TZ))
    return ward_report(ward_facts, [CITY], OCT, now, ReportPolicy())  # type: ignore[arg-type]


def test_a_meeting_on_the_planned_day_with_everyone_counted_scores_full_marks() -> None:
    r = report([meeting()], members(22, exempt=2))
    cell = r.cells[0]
    assert (cell.members, cell.exempt, cell.counted) == (22, 2, 20)
    assert cell.regular == "held_on_planned_day" and cell.rate == 0.9 and not cell.below_target
    assert r.meetings[0].score == 100 and r.meetings[0].band == "Tốt"
    assert r.figures.quality.bands == {"Tốt": 1, "Khá": 0, "Trung bình": 0, "Kém": 0}
    assert r.figures.attendance.rate_both_roll_calls == 0.85
    assert r.title == "Báo cáo kết quả sinh hoạt chi bộ tháng 10/2026"


def test_a_short_late_meeting_without_minutes_loses_points_and_is_late() -> None:
    late = meeting(opened_at=at(5), closed_at=at(5, 20, 0), minutes_recorded=False)
    r = report([late], members(20))
    line = r.meetings[0]
    assert r.cells[0].regular == "held_late"
    assert line.criteria["duration"] is False and line.criteria["minutes"] is False
    assert line.score == 100 - 20 - 15 and line.band == "Trung bình"


def test_a_cancelled_meeting_is_not_held_and_keeps_its_reason() -> None:
    cancelled = meeting(opened_at=None, closed_at=None, cancelled_reason="Mưa bão")
    r = report([cancelled], members(10))
    assert r.cells[0].regular == "cancelled" and r.cells[0].cancel_reason == "Mưa bão"
    assert r.figures.regular_meetings.not_held_cells == ["Chi bộ phố Lê Lai 1"]
    assert r.figures.attendance.rate is None and r.meetings == []


def test_the_rubric_is_data_and_must_add_up_to_a_hundred() -> None:
    strict = QualityRubric(attendance=50, no_unexcused_absence=10, duration=10, participation=10,
                           minutes=10, previous_resolution=10)  # fmt: skip
    assert strict.band(89) == "Khá" and strict.band(49) == "Kém"
    with pytest.raises(ValidationError):
        QualityRubric(attendance=90)


def petition(*steps: facts.PetitionStep) -> facts.Petition:
    return facts.Petition("p1", "nam-ngan", "cb1", "land", "Ngõ 5", at(3), "cell", "cb1",
                          at(10), False, steps)  # fmt: skip


def test_a_petitions_state_is_taken_at_the_cut_off() -> None:
    up = facts.PetitionStep(at(8), "escalated", "cell", "ward", "nam-ngan", "beyond_authority",
                            at(25))  # fmt: skip
    done = facts.PetitionStep(at(20), "resolved", "ward")
    p = petition(up, done)
    assert petition_state(p, at(15)).level == "ward" and petition_state(p, at(15)).open
    assert not petition_state(p, at(21)).open
    assert petition_state(p, at(21)).resolved_at == "ward"


def test_the_status_says_whether_the_report_is_in_time() -> None:
    assert status_of(OCT, None, at(20)).state == "in_progress"
    assert status_of(OCT, None, datetime(2026, 11, 9, 23, tzinfo=LOCAL_TZ)).state == "awaiting"
    assert status_of(OCT, None, datetime(2026, 11, 10, tzinfo=LOCAL_TZ)).state == "overdue"
    late = facts.Submission("nam-ngan", "2026-10", OCT.report_due_at + timedelta(hours=1),
                            OCT.report_due_at, False, "Lê Hà")  # fmt: skip
    assert status_of(OCT, late, at(20)).label_vi == "Đã gửi muộn"


def test_a_rollup_sums_its_wards_and_qualifies_cell_names() -> None:
    cancelled = meeting(opened_at=None, closed_at=None, cancelled_reason="Mưa bão")
    ward_facts = facts.WardFacts(WARD, [CELL], members(10), [cancelled], [], [], None)
    now = datetime(2026, 11, 5, tzinfo=LOCAL_TZ)
    r = rollup_report(CITY, [], [ward_facts], {}, OCT, now, ReportPolicy())
    assert r.figures.regular_meetings.not_held_cells == ["Chi bộ phố Lê Lai 1 (phường Nam Ngạn)"]
    assert r.reports_missing == 1 and r.wards[0].status.state == "awaiting"


def test_the_published_report_schema_is_current() -> None:
    from services.reports.entrypoints import schema

    assert schema.main(["--check"]) == 0, "run: python -m services.reports.entrypoints.schema"
