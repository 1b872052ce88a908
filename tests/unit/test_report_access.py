"""Who may read which unit's report, and which months a reader may ask for: the pure
parts of the reports API (the HTTP answers are in tests/integration/test_reports_http.py)."""

from __future__ import annotations

from datetime import UTC

import pytest

from services.reports.domain import facts
from services.reports.service_layer.reports import Tree, UnknownUnit
from shared.auth import AuthError, Principal, Role
from shared.clock import ReportMonth

TREE = Tree(
    {
        "p": facts.Unit("p", "province", "Đảng bộ tỉnh Thanh Hóa", None),
        "d": facts.Unit("d", "district", "Đảng bộ thành phố Thanh Hóa", "p"),
        "w1": facts.Unit("w1", "ward", "Đảng bộ phường Nam Ngạn", "d"),
        "w2": facts.Unit("w2", "commune", "Đảng bộ xã Thiệu Vân", "d"),
        "d2": facts.Unit("d2", "district", "Đảng bộ huyện Đông Sơn", "p"),
    },
    frozenset({"ward", "commune"}),
)


def token(level: str, unit: str | None) -> Principal:
    role = {
        "system": Role.SYSTEM_PUBLISHER,
        "cell": Role.CELL_SECRETARY,
        "ward": Role.WARD_OFFICIAL,
    }.get(level, Role.DISTRICT_OFFICIAL)
    return Principal(subject="t", role=role, scope_level=level, scope_unit=unit)


def answer(principal: Principal, unit_id: str) -> str:
    try:
        return TREE.readable_unit(principal, unit_id).unit_id
    except AuthError as exc:
        return f"{exc.status} {exc.code}"
    except UnknownUnit:
        return "404"


@pytest.mark.parametrize(
    ("principal", "unit_id", "expected"),
    [
        (token("ward", "w1"), "w1", "w1"),
        (token("ward", "w1"), "w2", "403 forbidden_scope"),
        (token("ward", "w1"), "d", "403 forbidden_scope"),
        (token("district", "d"), "w2", "w2"),
        (token("district", "d"), "d", "d"),
        (token("district", "d"), "p", "403 forbidden_scope"),
        (token("district", "d2"), "w1", "403 forbidden_scope"),
        (token("province", "p"), "w1", "w1"),
        (token("cell", "w1.cb01"), "w1", "403 forbidden_scope"),
        (token("system", None), "w2", "w2"),
    ],
)
def test_a_token_reads_its_unit_and_the_units_below_it(
    principal: Principal, unit_id: str, expected: str
) -> None:
    assert answer(principal, unit_id) == expected


@pytest.mark.parametrize(
    "principal",
    [token("ward", "w1"), token("district", "d"), token("province", "p"), token("cell", "x")],
)
def test_an_unknown_unit_outside_the_scope_is_refused_like_an_existing_one(
    principal: Principal,
) -> None:
    """No existence oracle: a unit the token cannot read is 403 whether or not it exists."""
    assert answer(principal, "no-such-unit") == "403 forbidden_scope"
    outside = "d2" if principal.scope_level != "province" else None
    if outside:
        assert answer(principal, outside) == "403 forbidden_scope"


def test_an_unknown_unit_is_404_only_inside_the_scope() -> None:
    assert answer(token("system", None), "no-such-unit") == "404"
    assert answer(token("ward", "w-new"), "w-new") == "404"  # its own ward, not placed yet
    assert answer(token("cell", "w-new"), "w-new") == "403 forbidden_scope"


@pytest.mark.parametrize(
    ("label", "accepted"),
    [
        ("0000-01", False),
        ("0001-01", False),
        ("1999-12", False),
        ("2000-01", True),
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
