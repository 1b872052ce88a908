"""Which months a reader may ask for: the pure part of the reports API's checks (the HTTP
answers are in tests/integration/test_reports_http.py)."""

from __future__ import annotations

from datetime import UTC

import pytest

from shared.clock import ReportMonth


@pytest.mark.parametrize(
    ("label", "accepted"),
    [
        ("0000-01", False),
        ("0001-01", False),
        ("1929-12", False),
        ("1930-01", True),
        ("2026-10", True),
        ("2099-12", True),
        ("2100-01", False),
        ("9999-12", False),
    ],
)
def test_months_are_accepted_between_the_first_and_last_year(label: str, accepted: bool) -> None:
    assert ReportMonth.in_range(label) is accepted
    if accepted:  # its bounds convert to UTC, as the PostgreSQL driver sends them
        month = ReportMonth(label)
        start, end, due = (t.astimezone(UTC) for t in (month.start, month.end, month.report_due_at))
        assert start < end < due
