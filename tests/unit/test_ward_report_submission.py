"""Given events, when the ward submits its monthly report, then on time, late or refused."""

from __future__ import annotations

from datetime import datetime

import pytest

from services.meetings.domain import ward_report
from services.meetings.domain.errors import DomainRejection
from shared.clock import LOCAL_TZ, ReportMonth
from shared.contract.commands import SubmitWardReport
from shared.contract.events import WardReportSubmitted

CMD = SubmitWardReport(ward_id="nam-ngan", month="2026-12", submitted_by="Lê Thị Hà")


def test_the_report_is_on_time_until_the_tenth_of_the_next_month_local_time() -> None:
    on_time = ward_report.submit(CMD, [], datetime(2027, 1, 9, 23, 59, tzinfo=LOCAL_TZ))[0]
    late = ward_report.submit(CMD, [], datetime(2027, 1, 10, 0, 0, tzinfo=LOCAL_TZ))[0]
    assert isinstance(on_time, WardReportSubmitted) and on_time.on_time
    assert isinstance(late, WardReportSubmitted) and not late.on_time
    assert on_time.due_at == datetime(2027, 1, 10, tzinfo=LOCAL_TZ)


def test_a_report_is_sent_once_and_not_before_its_month_is_over() -> None:
    sent = ward_report.submit(CMD, [], datetime(2027, 1, 5, tzinfo=LOCAL_TZ))
    with pytest.raises(DomainRejection) as again:
        ward_report.submit(CMD, sent, datetime(2027, 1, 6, tzinfo=LOCAL_TZ))
    assert again.value.code == "already_submitted"
    with pytest.raises(DomainRejection) as early:
        ward_report.submit(CMD, [], datetime(2026, 12, 31, 23, 0, tzinfo=LOCAL_TZ))
    assert early.value.code == "month_not_over"


def test_report_months_follow_ho_chi_minh_time() -> None:
    december = ReportMonth("2026-12")
    assert december.end == datetime(2027, 1, 1, tzinfo=LOCAL_TZ)
    assert december.quarter_start() == datetime(2026, 10, 1, tzinfo=LOCAL_TZ)
    assert ReportMonth.of(datetime(2026, 11, 30, 17, 30, tzinfo=LOCAL_TZ).astimezone()).label == (
        "2026-11"
    )
    assert december.previous().label == "2026-11"
