"""The report over HTTP on the real stack: who may read what, read-your-writes after the
ward submits its report, the CSV and HTML outputs, and clear rejections."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import httpx
import pytest

from generator.build import Generated, generate
from generator.model import GeneratorConfig
from generator.month import previous_month
from generator.publish import publish
from ops.stack import Stack
from tests.integration.helpers import eventually, fetch


def _headers(stack: Stack, role: str, level: str, unit: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.issue_token(role, level, unit, 'test.reader')}"}


@pytest.fixture(scope="module")
async def small(stack: Stack) -> Generated:
    for name in ("meetings", "reports"):
        if not stack.is_running(name):
            stack.start_service(name)
    g = generate(GeneratorConfig(seed=41, wards=2, cells=6), *previous_month(datetime.now(UTC)))
    sent = await publish(
        g.commands, stack.kafka_bootstrap, stack.database_url, timeout_s=120, show_progress=False
    )
    assert sent.ok and sent.rejected == []
    wards = [w.unit_id for w in g.district.wards]

    async def applied() -> bool:
        rows = await fetch(
            stack.database_url,
            "select count(*) as n from reports.cells where ward_id = any($1::text[])",
            wards,
        )
        return rows[0]["n"] == 6

    await eventually(applied, timeout_s=60, what="cells projected")
    return g


def _url(stack: Stack, unit: str, month: str) -> str:
    return f"{stack.service_url('reports')}/v1/reports/{unit}/{month}"


async def test_a_ward_token_reads_its_ward_only_and_a_district_token_reads_below_it(
    small: Generated, stack: Stack
) -> None:
    month = small.expected["month"]
    first, second = (w.unit_id for w in small.district.wards)
    district = next(u.unit_id for u in small.district.units if u.level == "district")
    ward_token = _headers(stack, "ward_official", "ward", first)
    async with httpx.AsyncClient(timeout=30) as http:
        own = await http.get(_url(stack, first, month), headers=ward_token)
        other = await http.get(_url(stack, second, month), headers=ward_token)
        above = await http.get(_url(stack, district, month), headers=ward_token)
        district_token = _headers(stack, "district_official", "district", district)
        rollup = await http.get(_url(stack, district, month), headers=district_token)
        below = await http.get(_url(stack, second, month), headers=district_token)
        cell = await http.get(
            _url(stack, first, month), headers=_headers(stack, "cell_secretary", "cell", "x")
        )
        anonymous = await http.get(_url(stack, first, month))
    assert own.status_code == 200 and own.json()["schema"] == "chibo-ward-report/1"
    assert own.json()["unit"]["unit_id"] == first
    for refused in (other, above, cell):
        assert refused.status_code == 403
        assert refused.json()["code"] == "forbidden_scope"
        assert "quyền" in refused.json()["message_vi"]
    assert anonymous.status_code == 401
    assert rollup.status_code == 200 and rollup.json()["schema"] == "chibo-rollup-report/1"
    assert {w["unit"]["unit_id"] for w in rollup.json()["wards"]} == {first, second}
    assert rollup.json()["figures"]["cells"] == 6
    assert below.status_code == 200


async def test_bad_requests_get_a_reason(small: Generated, stack: Stack) -> None:
    ward = small.district.wards[0].unit_id
    system = _headers(stack, "system_publisher", "system", None)
    async with httpx.AsyncClient(timeout=30) as http:
        bad_month = await http.get(_url(stack, ward, "2026-13"), headers=system)
        unknown = await http.get(_url(stack, "no-such-ward", "2026-10"), headers=system)
        bad_wait = await http.get(
            _url(stack, ward, "2026-10"),
            headers=system,
            params={"consistent_with": "no-version"},
        )
        bad_format = await http.get(
            _url(stack, ward, "2026-10"), headers=system, params={"format": "pdf"}
        )
    assert bad_month.status_code == 422
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_unit"
    assert bad_wait.status_code == 422
    assert bad_wait.json()["code"] == "invalid_consistent_with"
    assert bad_format.status_code == 422


async def test_a_submitted_report_is_visible_at_once_with_read_your_writes(
    small: Generated, stack: Stack
) -> None:
    month = small.expected["month"]
    ward = small.district.wards[1].unit_id
    headers = _headers(stack, "ward_official", "ward", ward)
    async with httpx.AsyncClient(timeout=30) as http:
        before = await http.get(_url(stack, ward, month), headers=headers)
        assert before.json()["status"]["state"] in ("awaiting", "overdue")
        sent = await http.post(
            f"{stack.service_url('meetings')}/v1/commands/SubmitWardReport",
            headers=headers,
            json={"ward_id": ward, "month": month, "submitted_by": "Nguyễn Thị Lan"},
        )
        assert sent.status_code == 201, sent.text
        token = f"{sent.json()['stream_id']}@{sent.json()['stream_version']}"
        after = await http.get(
            _url(stack, ward, month), headers=headers, params={"consistent_with": token}
        )
        again = await http.post(
            f"{stack.service_url('meetings')}/v1/commands/SubmitWardReport",
            headers=headers,
            json={"ward_id": ward, "month": month, "submitted_by": "Nguyễn Thị Lan"},
        )
        never = await http.get(
            _url(stack, ward, month),
            headers=headers,
            params={"consistent_with": f"{sent.json()['stream_id']}@99", "wait_ms": 200},
        )
    status = after.json()["status"]
    due = datetime.fromisoformat(status["due_at"])
    assert after.status_code == 200
    assert status["submitted_by"] == "Nguyễn Thị Lan"
    submitted = datetime.fromisoformat(status["submitted_at"])
    assert status["state"] == ("submitted_on_time" if submitted < due else "submitted_late")
    assert status["label_vi"] in ("Đã gửi đúng hạn", "Đã gửi muộn")
    assert again.status_code == 409 and again.json()["code"] == "already_submitted"
    assert never.status_code == 503 and never.json()["code"] == "not_yet_applied"


async def test_csv_and_html_carry_the_same_figures(small: Generated, stack: Stack) -> None:
    month = small.expected["month"]
    ward = small.expected["wards"][0]
    headers = _headers(stack, "ward_official", "ward", ward["ward_id"])
    async with httpx.AsyncClient(timeout=30) as http:
        as_csv = await http.get(
            _url(stack, ward["ward_id"], month), headers=headers, params={"format": "csv"}
        )
        as_html = await http.get(
            _url(stack, ward["ward_id"], month), headers=headers, params={"format": "html"}
        )
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text.lstrip("\ufeff"))))
    assert sorted(r["cell_id"] for r in rows) == sorted(c["cell_id"] for c in ward["cells_detail"])
    by_id = {c["cell_id"]: c for c in ward["cells_detail"]}
    for row in rows:
        assert int(row["members"]) == by_id[row["cell_id"]]["members"]
    assert as_html.headers["content-type"].startswith("text/html")
    page = as_html.text
    assert "BÁO CÁO KẾT QUẢ SINH HOẠT CHI BỘ" in page
    assert ward["name"].upper() in page or ward["name"] in page
    assert ward["cells_detail"][0]["name"] in page


async def test_ward_meeting_lists_are_scoped_like_the_reports(
    small: Generated, stack: Stack
) -> None:
    first, second = (w.unit_id for w in small.district.wards)
    district = next(u.unit_id for u in small.district.units if u.level == "district")
    base = f"{stack.service_url('reports')}/v1/wards"
    ward_token = _headers(stack, "ward_official", "ward", first)
    district_token = _headers(stack, "district_official", "district", district)
    async with httpx.AsyncClient(timeout=30) as http:
        anonymous = await http.get(base)
        own_list = await http.get(base, headers=ward_token)
        district_list = await http.get(base, headers=district_token)
        own = await http.get(f"{base}/{first}/meetings", headers=ward_token)
        other = await http.get(f"{base}/{second}/meetings", headers=ward_token)
        below = await http.get(f"{base}/{second}/meetings", headers=district_token)
    assert anonymous.status_code == 401
    assert [w["ward_id"] for w in own_list.json()["wards"]] == [first]
    assert {w["ward_id"] for w in district_list.json()["wards"]} >= {first, second}
    assert own.status_code == 200 and own.json()["meetings_scheduled"] == len(
        own.json()["meetings"]
    )
    assert own.json()["meetings"], "the generated month schedules meetings in every ward"
    assert other.status_code == 403 and other.json()["code"] == "forbidden_scope"
    assert below.status_code == 200 and below.json()["ward_id"] == second


@pytest.mark.parametrize(
    "month",
    [
        "0000-01",  # datetime has no year 0
        "0001-01",  # its start is in year 0 once in UTC
        "9999-12",  # its end is in year 10000
        "1999-12",  # before the first accepted year
        "2100-01",  # after the last
        "%D9%A2%D9%A0%D9%A2%D9%A6-10",  # Arabic-Indic digits: \d matches them
        "%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%96-10",  # fullwidth digits
        "2026-10%00",
        "2026-1",
        "99999999999999999999-01",
    ],
)
async def test_every_bad_month_gets_a_reason_never_a_500(
    small: Generated, stack: Stack, month: str
) -> None:
    ward = small.district.wards[0].unit_id
    system = _headers(stack, "system_publisher", "system", None)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(_url(stack, ward, month), headers=system)
    assert response.status_code == 422, response.text
    assert response.json()["code"] in ("invalid_command", "month_out_of_range")
    assert response.json()["message_vi"]


async def test_the_first_and_last_accepted_months_are_read(small: Generated, stack: Stack) -> None:
    ward = small.district.wards[0].unit_id
    system = _headers(stack, "system_publisher", "system", None)
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.get(_url(stack, ward, "2000-01"), headers=system)
        last = await http.get(
            _url(stack, ward, "2099-12"), params={"format": "csv"}, headers=system
        )
    assert first.status_code == 200 and first.json()["month"] == "2000-01"
    assert last.status_code == 200
    assert last.headers["content-disposition"] == f'attachment; filename="{ward}-2099-12.csv"'


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("consistent_with=a%00b@1", "invalid_consistent_with"),  # PostgreSQL text has no NUL
        ("consistent_with=%C3%A9@1", "invalid_consistent_with"),  # no stream id has it
        ("consistent_with=@1", "invalid_consistent_with"),
        ("consistent_with=a@0", "invalid_consistent_with"),
        ("consistent_with=a@99999999999999999999", "invalid_consistent_with"),
        (f"consistent_with={'a' * 201}@1", "invalid_consistent_with"),
        ("consistent_with=a@%D9%A2", "invalid_consistent_with"),
        ("consistent_with=", "invalid_consistent_with"),
        ("wait_ms=", "invalid_command"),
        ("wait_ms=-1", "invalid_command"),
        ("wait_ms=30001", "invalid_command"),
        ("wait_ms=99999999999999999999999999", "invalid_command"),
        ("wait_ms=%00", "invalid_command"),
        ("wait_ms=%D9%A2", "invalid_command"),
        ("format=", "invalid_command"),
        ("format=CSV", "invalid_command"),
        ("format=csv%00", "invalid_command"),
    ],
)
async def test_hostile_query_parameters_get_a_reason_never_a_500(
    small: Generated, stack: Stack, query: str, code: str
) -> None:
    ward = small.district.wards[0].unit_id
    system = _headers(stack, "system_publisher", "system", None)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(f"{_url(stack, ward, '2026-10')}?{query}", headers=system)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code and response.json()["message_vi"]


async def test_the_largest_version_is_waited_for_and_answered(
    small: Generated, stack: Stack
) -> None:
    ward = small.district.wards[0].unit_id
    system = _headers(stack, "system_publisher", "system", None)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(
            _url(stack, ward, "2026-10"),
            headers=system,
            params={"consistent_with": "meeting-x@9999999999", "wait_ms": 0},
        )
    assert response.status_code == 503 and response.json()["code"] == "not_yet_applied"
    assert response.json()["details"]["behind"] == {"meeting-x": 9999999999}


@pytest.mark.parametrize(
    "unit", ["A", "%C3%A9", "a%00", "a" * 65, "-a", "%D9%A2", "a%20b", "a%2Fb"]
)
async def test_hostile_unit_ids_get_a_reason_never_a_500(
    small: Generated, stack: Stack, unit: str
) -> None:
    system = _headers(stack, "system_publisher", "system", None)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(_url(stack, unit, "2026-10"), headers=system)
    assert response.status_code in (404, 422), response.text
    assert response.json()["code"] in ("not_found", "invalid_command")


async def _other_wards_stream(stack: Stack, ward: str) -> tuple[str, int]:
    """A stream of ``ward`` the reports service has applied, and its version."""
    rows = await fetch(
        stack.database_url,
        "select a.stream_id, a.version from reports.applied_streams a"
        " join reports.cells c on a.stream_id = 'cell-' || c.cell_id"
        " where c.ward_id = $1 order by a.stream_id limit 1",
        ward,
    )
    return rows[0]["stream_id"], rows[0]["version"]


@pytest.mark.parametrize(
    ("role", "level", "scope"),
    [("ward_official", "ward", "first"), ("cell_secretary", "cell", "first-cell")],
)
async def test_consistent_with_waits_only_after_the_token_is_authorised(
    small: Generated, stack: Stack, role: str, level: str, scope: str
) -> None:
    month = small.expected["month"]
    first, second = (w.unit_id for w in small.district.wards)
    stream, version = await _other_wards_stream(stack, second)
    headers = _headers(stack, role, level, {"first": first, "first-cell": f"{first}.x"}[scope])
    answers = []
    async with httpx.AsyncClient(timeout=60) as http:
        started = datetime.now(UTC)
        for wanted in (version, version + 1):  # applied, and not (yet)
            for wait_ms in (0, 30_000):
                answers.append(
                    await http.get(
                        _url(stack, second, month),
                        headers=headers,
                        params={"consistent_with": f"{stream}@{wanted}", "wait_ms": wait_ms},
                    )
                )
        elapsed = (datetime.now(UTC) - started).total_seconds()
    # The same refusal whatever the stream's progress: no 503 telling it is behind.
    assert {(a.status_code, a.text) for a in answers} == {(403, answers[0].text)}
    assert answers[0].json()["code"] == "forbidden_scope"
    assert elapsed < 20, "a refused token was held for the wait"


async def test_a_unit_outside_the_scope_is_refused_alike_whether_it_exists_or_not(
    small: Generated, stack: Stack
) -> None:
    month = small.expected["month"]
    first, second = (w.unit_id for w in small.district.wards)
    district = next(u.unit_id for u in small.district.units if u.level == "district")
    tokens = {
        "ward": _headers(stack, "ward_official", "ward", first),
        "district": _headers(stack, "district_official", "district", district),
        "cell": _headers(stack, "cell_secretary", "cell", f"{first}.x"),
    }
    async with httpx.AsyncClient(timeout=30) as http:
        for name, headers in tokens.items():
            unknown = await http.get(_url(stack, "no-such-unit", month), headers=headers)
            assert (unknown.status_code, unknown.json()["code"]) == (403, "forbidden_scope"), name
            if name != "district":  # the district reads the second ward
                existing = await http.get(_url(stack, second, month), headers=headers)
                assert existing.status_code == 403 and existing.text == unknown.text, name
        # A unit the token's scope names itself is in scope: unknown is then 404.
        unplaced = _headers(stack, "ward_official", "ward", "ward-not-placed-yet")
        own = await http.get(_url(stack, "ward-not-placed-yet", month), headers=unplaced)
    assert own.status_code == 404 and own.json()["code"] == "unknown_unit"
