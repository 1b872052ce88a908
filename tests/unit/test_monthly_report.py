"""The monthly report's rules, from plain facts: planned day, exempt members, the quality
rubric and its bands, petitions at the cut-off, and the report's status."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.reports.adapters.rendering import render_html
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


# -- the review's findings (fix-report-figures) --------------------------------------------


def one_roll_call(**over: object) -> facts.Meeting:
    return meeting(present_second=None, present_both=None, **over)


ONE = facts.Cell("cb1", "nam-ngan", "Chi bộ phố Lê Lai 1", meeting_day=3, roll_calls=1)


def test_a_member_who_leaves_after_the_meeting_stays_in_its_denominator() -> None:
    # 10 on the roll on the 3rd, all present; 3 of them move away on the 15th.
    roll = [facts.Membership(f"m{i}", "cb1", False, BEFORE, at(15) if i < 3 else None)
            for i in range(10)]  # fmt: skip
    held = one_roll_call(present_first=10, absent_excused=0, absent_unexcused=0)
    r = ward_report(facts.WardFacts(WARD, [ONE], roll, [held], [], [], None), [CITY], OCT,
                    datetime(2026, 11, 5, tzinfo=LOCAL_TZ), ReportPolicy())  # fmt: skip
    cell = r.cells[0]
    assert cell.members == 7  # the month-end roll
    assert (cell.counted, cell.present_first_roll_call, cell.rate) == (10, 10, 1.0)
    assert r.figures.attendance.members_counted == 10 and r.figures.attendance.rate == 1.0
    assert r.meetings[0].counted == 10 and r.meetings[0].rate == 1.0


def test_a_member_admitted_after_the_meeting_does_not_lower_its_rate() -> None:
    roll = [facts.Membership(f"m{i}", "cb1", False, BEFORE if i < 10 else at(20), None)
            for i in range(15)]  # fmt: skip
    held = one_roll_call(present_first=9, absent_excused=1, absent_unexcused=0)
    r = ward_report(facts.WardFacts(WARD, [ONE], roll, [held], [], [], None), [CITY], OCT,
                    datetime(2026, 11, 5, tzinfo=LOCAL_TZ), ReportPolicy())  # fmt: skip
    cell, line = r.cells[0], r.meetings[0]
    assert cell.members == 15 and cell.counted == 10 and cell.rate == 0.9
    assert not cell.below_target and r.figures.attendance.cells_below_target == 0
    assert line.criteria["attendance"] and line.score == 100


def test_a_meeting_not_held_counts_the_month_end_roll_less_the_exempt() -> None:
    cancelled = meeting(opened_at=None, closed_at=None, cancelled_reason="Mưa bão")
    r = report([cancelled], members(12, exempt=2))
    assert (r.cells[0].members, r.cells[0].exempt, r.cells[0].counted) == (12, 2, 10)
    assert r.figures.members.counted == 10 and r.figures.attendance.members_counted == 0


def test_petition_steps_follow_the_stream_not_the_senders_clocks() -> None:
    # v2 resolved over HTTP at 10:00; v3 reopened from a phone whose clock is 2 min slow.
    resolved = facts.PetitionStep(at(5, 10, 0), "resolved", "cell")
    reopened = facts.PetitionStep(at(5, 9, 58), "reopened", "cell", deadline_at=at(12, 10))
    s = petition_state(petition(resolved, reopened), at(31, 23))
    assert s.open and s.resolved_at is None and s.reopened and s.deadline_at == at(12, 10)
    # The cut-off ends the walk at the first step past it, in stream order.
    assert not petition_state(petition(resolved, reopened), at(5, 9, 59)).reopened


def test_an_open_meeting_of_a_two_roll_call_cell_is_not_in_the_second_roll_call_figures() -> None:
    still_open = meeting(closed_at=None, present_second=None, present_both=None, speakers=None)
    r = report([still_open], members(20), now=at(3, 20))
    a = r.figures.attendance
    assert (a.two_roll_call_cells_held, a.members_counted_two_roll_calls) == (0, 0)
    assert a.rate_both_roll_calls is None
    closed = report([meeting()], members(20)).figures.attendance
    assert (closed.two_roll_call_cells_held, closed.members_counted_two_roll_calls) == (1, 20)


def test_a_cell_committees_resolutions_are_not_the_cells() -> None:
    committee = meeting(meeting_id="ct1", kind="committee", first_scheduled_start=at(2),
                        scheduled_start=at(2), opened_at=at(2), closed_at=at(2, 20))  # fmt: skip
    tasks = (facts.Task("t1", date(2026, 10, 1), None),)
    resolutions = [
        facts.Resolution("nq-ct", "ct1", "cb1", "Chi ủy thống nhất nội dung", tasks),
        facts.Resolution("nq-tk", "mt1", "cb1", "Nghị quyết tháng 10", ()),
    ]
    ward_facts = facts.WardFacts(WARD, [CELL], members(20), [committee, meeting()], resolutions,
                                 [], None)  # fmt: skip
    r = ward_report(ward_facts, [CITY], OCT, datetime(2026, 11, 5, tzinfo=LOCAL_TZ), ReportPolicy())
    assert r.cells[0].resolutions == 1 and r.cells[0].tasks_assigned == 0
    res = r.figures.resolutions
    assert (res.adopted, res.tasks_assigned, res.tasks_overdue) == (1, 0, 0)


def test_a_reopened_petition_with_a_new_deadline_is_no_longer_overdue() -> None:
    p = facts.Petition("p9", "nam-ngan", "cb1", "land", "X", at(1), "province", "thanh-hoa",
                       at(2), False, (
        facts.PetitionStep(at(2, 1), "marked_overdue", "province"),
        facts.PetitionStep(at(4), "resolved", "province"),
        facts.PetitionStep(at(5), "reopened", "province", deadline_at=at(30)),
    ))  # fmt: skip
    assert petition_state(p, at(3)).marked_overdue
    s = petition_state(p, at(6))
    assert s.open and not s.marked_overdue and s.deadline_at == at(30)
    r = ward_report(facts.WardFacts(WARD, [CELL], members(5), [], [], [p], None), [CITY], OCT,
                    at(6), ReportPolicy())  # fmt: skip
    assert r.figures.petitions.overdue == 0


# A commune (Đảng bộ xã) is a "ward" here; the ladder's second rung is called "ward" by
# default (PETITION_LADDER), or "commune" in a deployment that names it so.
COMMUNE = facts.Unit("thanh-minh", "commune", "Đảng bộ xã Thanh Minh", "thanh-hoa")
HAMLET = facts.Cell("cx1", "thanh-minh", "Chi bộ bản Phiêng Lơi", meeting_day=10, roll_calls=1)


def commune_facts(rung: str) -> facts.WardFacts:
    def raised(pid: str, *steps: facts.PetitionStep) -> facts.Petition:
        return facts.Petition(pid, "thanh-minh", "cx1", "land", f"Bản Phiêng Lơi {pid}", at(10),
                              "cell", "cx1", at(17), False, steps)  # fmt: skip

    def up(day: int, from_level: str, to: str, holder: str | None) -> facts.PetitionStep:
        return facts.PetitionStep(at(day), "escalated", from_level, to, holder,
                                  "beyond_authority", at(day + 15))  # fmt: skip

    resolved_at_commune = facts.PetitionStep(at(14), "resolved", rung)
    petitions = [
        raised("kn1", up(12, "cell", rung, "thanh-minh")),  # open at the commune
        raised("kn2", up(12, "cell", rung, "thanh-minh"), resolved_at_commune),
        raised("kn3", up(12, "cell", rung, "thanh-minh"), up(13, rung, "province", "thanh-hoa")),
        raised("kn4", facts.PetitionStep(at(12), "resolved", "cell")),
        raised("kn5"),  # open at the cell
    ]
    held = one_roll_call(meeting_id="mx1", ward_id="thanh-minh", cell_id="cx1",
                         first_scheduled_start=at(10), scheduled_start=at(10), opened_at=at(10),
                         closed_at=at(10, 21))  # fmt: skip
    roll = [facts.Membership(f"x{i}", "cx1", False, BEFORE, None) for i in range(20)]
    return facts.WardFacts(COMMUNE, [HAMLET], roll, [held], [], petitions, None)


@pytest.mark.parametrize("rung", ["ward", "commune"])
def test_a_commune_holds_and_answers_petitions_like_a_ward(rung: str) -> None:
    r = ward_report(commune_facts(rung), [CITY], OCT, at(20), ReportPolicy())
    p = r.figures.petitions
    assert (p.escalated_to_ward, p.resolved_by_ward, p.escalated_above_ward) == (3, 1, 1)
    assert (p.open_at_cell, p.open_at_ward, p.open_above_ward) == (1, 1, 1)
    assert p.resolved_at_cell == 1
    assert [a.petition_id for a in r.petitions_needing_ward_action] == ["kn1"]


def test_a_rollup_of_wards_and_communes_adds_up_to_its_rows() -> None:
    ward_petition = facts.Petition("kn-w", "nam-ngan", "cb1", "roads_infrastructure", "Ngõ 5",
                                   at(3), "cell", "cb1", at(10), False, (
        facts.PetitionStep(at(4), "escalated", "cell", "ward", "nam-ngan", "deadline", at(19)),
    ))  # fmt: skip
    ward = facts.WardFacts(WARD, [CELL], members(20), [meeting()], [], [ward_petition], None)
    now = at(20)
    r = rollup_report(CITY, [], [ward, commune_facts("ward")], {}, OCT, now, ReportPolicy())
    total = r.figures.petitions.model_dump()
    for key, value in total.items():
        if isinstance(value, int):
            assert value == sum(w.figures.petitions.model_dump()[key] for w in r.wards), key
    assert total["escalated_to_ward"] == 4 and total["open_at_ward"] == 2


def test_recurring_and_the_recurring_topics_agree_and_name_their_ward() -> None:
    def p(pid: str, category: str, place: str, recurring: bool) -> facts.Petition:
        return facts.Petition(pid, "nam-ngan", "cb1", category, place, at(3, 20), "cell", "cb1",
                              at(10), recurring)  # fmt: skip

    petitions = [
        p("kn1", "environment", "Ngõ 5 phố Lê Lai", False),
        p("kn2", "environment", "ngõ 5,  phố LÊ LAI", True),  # the same place, as the flag says
        p("kn3", "roads_infrastructure", "Đường Trần Phú", True),  # repeats September's
        p("kn4", "land", "Thôn Hòa", False),
    ]
    ward_facts = facts.WardFacts(WARD, [CELL], members(20), [meeting()], [], petitions, None)
    r = ward_report(ward_facts, [CITY], OCT, at(5), ReportPolicy())
    f = r.figures.petitions
    assert f.recurring == 2
    assert [(t.ward, t.category, t.place, t.times) for t in f.recurring_topics] == [
        ("phường Nam Ngạn", "environment", "Ngõ 5 phố Lê Lai", 2),
        ("phường Nam Ngạn", "roads_infrastructure", "Đường Trần Phú", 1),
    ]
    html = render_html(r)
    assert "Không có vấn đề được kiến nghị nhiều lần" not in html and "Đường Trần Phú" in html
    rollup = rollup_report(CITY, [], [ward_facts], {}, OCT, at(5), ReportPolicy())
    assert "<td>phường Nam Ngạn</td><td>Môi trường</td>" in render_html(rollup)
