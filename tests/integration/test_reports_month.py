"""A whole district's month through the real stack: every ward's report and the roll-up
equal the generator's independently computed figures, and still do after the reports
service is killed mid-stream, after every event is redelivered, and after a rebuild."""

from __future__ import annotations

import asyncio
import html as html_lib
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from generator.build import Generated, generate
from generator.model import GeneratorConfig
from generator.month import previous_month
from generator.publish import publish
from ops.demo import FIGURE_KEYS, differences
from ops.stack import Stack
from services.reports.bootstrap import CONSUMER_GROUP
from tests.integration.helpers import eventually, fetch, metric_value
from tests.integration.test_report_html_browser import ARTIFACTS, CHROMIUM, PROBE, chromium

SEED = 2031
PROJECTION_TABLES = (
    "units",
    "cells",
    "memberships",
    "exemptions",
    "meetings",
    "resolutions",
    "tasks",
    "petitions",
    "petition_steps",
    "submissions",
    "orientations",
    "applied_streams",
)


def _auth(stack: Stack, level: str, unit: str) -> dict[str, str]:
    role = {"ward": "ward_official", "district": "district_official"}.get(
        level, "province_official"
    )
    return {"Authorization": f"Bearer {stack.issue_token(role, level, unit, f'test.{unit}')}"}


async def _applied_everything(stack: Stack, wards: list[str]) -> bool:
    """Every stream of these wards is applied by the reports up to its last version."""
    rows = await fetch(
        stack.database_url,
        "select count(*) as behind from (select stream_id, max(stream_version) as v"
        "  from meetings.events where ward_id = any($1::text[]) group by stream_id) e"
        " left join reports.applied_streams a using (stream_id)"
        " where a.version is null or a.version < e.v",
        wards,
    )
    return rows[0]["behind"] == 0


async def _applied_count(stack: Stack, prefix: str) -> int:
    rows = await fetch(
        stack.database_url,
        "select coalesce(sum(version), 0) as n from reports.applied_streams"
        " where stream_id like '%' || $1 || '%'",
        prefix,
    )
    return int(rows[0]["n"])


def _report(stack: Stack, unit: str, month: str, headers: dict[str, str]) -> dict[str, Any]:
    r = httpx.get(
        f"{stack.service_url('reports')}/v1/reports/{unit}/{month}", headers=headers, timeout=30
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _differences(g: Generated, stack: Stack) -> list[str]:
    month = g.expected["month"]
    diffs: list[str] = []
    for ward in g.expected["wards"]:
        got = _report(stack, ward["ward_id"], month, _auth(stack, "ward", ward["ward_id"]))
        want = {k: ward[k] for k in FIGURE_KEYS}
        diffs += differences(want, got["figures"], ward["ward_id"])
        cells = {c["cell_id"]: c for c in got["cells"]}
        for cell in ward["cells_detail"]:
            want_cell = {k: v for k, v in cell.items() if k != "ward"}
            diffs += differences(want_cell, cells.get(cell["cell_id"], {}), cell["cell_id"])
    district = next(u for u in g.expected["units"] if u["level"] == "district")
    rollup = _report(
        stack, district["unit_id"], month, _auth(stack, "district", district["unit_id"])
    )
    diffs += differences(
        {k: g.expected["district"][k] for k in FIGURE_KEYS}, rollup["figures"], "district"
    )
    assert len(rollup["wards"]) == len(g.expected["wards"])
    return diffs


async def _dump(stack: Stack) -> dict[str, list[str]]:
    dump = {}
    for table in PROJECTION_TABLES:
        skip = {"applied_at"}
        rows = await fetch(stack.database_url, f"select * from reports.{table}")
        dump[table] = sorted(
            json.dumps({k: v for k, v in dict(r).items() if k not in skip}, default=str)
            for r in rows
        )
    return dump


@pytest.fixture(scope="module")
async def month(stack: Stack) -> Generated:
    """The demo-sized district's last month, published while the reports service is down,
    which is then killed (kill -9) part-way through the backlog and started again."""
    for name in ("meetings", "reports", "notifications"):
        if not stack.is_running(name):
            stack.start_service(name)
    year, month_ = previous_month(datetime.now(UTC))
    g = generate(GeneratorConfig(seed=SEED), year, month_)
    stack.stop_part("reports")
    sent = await publish(
        g.commands, stack.kafka_bootstrap, stack.database_url, timeout_s=300, show_progress=False
    )
    assert sent.rejected == [] and sent.missing == []
    total = sum(g.expected["events"]["by_type"].values())
    stack.start_service("reports")
    prefix = g.district.config.id_prefix
    await eventually(
        lambda: _partly(stack, prefix, total), timeout_s=120, interval_s=0.01, what="part applied"
    )
    stack.stop_part("reports", kill=True)
    stack.start_service("reports")
    wards = [w.unit_id for w in g.district.wards] + [u.unit_id for u in g.district.units]
    await eventually(lambda: _applied_everything(stack, wards), timeout_s=180, what="all applied")
    return g


async def _partly(stack: Stack, prefix: str, total: int) -> bool:
    return 0 < await _applied_count(stack, prefix) < total


async def test_every_ward_and_the_district_equal_the_generators_figures(
    month: Generated, stack: Stack
) -> None:
    diffs = _differences(month, stack)
    assert diffs == [], "\n".join(diffs[:60])


async def test_redelivering_every_event_changes_nothing(month: Generated, stack: Stack) -> None:
    before = await _dump(stack)
    stack.stop_part("reports")
    await _rewind_group(stack, CONSUMER_GROUP)
    stack.start_service("reports")

    async def redelivered() -> bool:
        duplicates = await metric_value(
            stack, "reports", "chibo_consumed_events_total", outcome="duplicate"
        )
        return duplicates is not None and duplicates >= sum(
            month.expected["events"]["by_type"].values()
        )

    await eventually(redelivered, timeout_s=180, what="every event redelivered")
    assert await _dump(stack) == before
    assert _differences(month, stack) == []


async def test_a_rebuild_equals_the_live_projection(month: Generated, stack: Stack) -> None:
    before = await _dump(stack)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "DATABASE_URL": stack.database_url,
    }
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.cli",
        "reports",
        "rebuild",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(cli.communicate(), timeout=600)
    assert cli.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["applied"] >= sum(month.expected["events"]["by_type"].values())
    assert await _dump(stack) == before
    assert _differences(month, stack) == []


async def _rewind_group(stack: Stack, group: str) -> None:
    """Commit offset 0 on every partition for a stopped group: it reads everything again."""
    from aiokafka import AIOKafkaConsumer

    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        topics = await admin.describe_topics(["chibo.events.v1"])
        partitions = [
            TopicPartition("chibo.events.v1", p["partition"]) for p in topics[0]["partitions"]
        ]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.commit({tp: 0 for tp in partitions})
    finally:
        await consumer.stop()


async def test_the_live_reports_render_in_a_browser_without_overflow(
    month: Generated, stack: Stack, tmp_path: Path
) -> None:
    """The HTML of a real ward and of the district roll-up, as the service serves them."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make setup installs it when run as root)")
    ward = month.expected["wards"][0]
    district = next(u for u in month.expected["units"] if u["level"] == "district")
    ARTIFACTS.mkdir(exist_ok=True)
    for name, unit, level in (
        ("ward", ward["ward_id"], "ward"),
        ("district", district["unit_id"], "district"),
    ):
        async with httpx.AsyncClient(timeout=30) as http:
            page = await http.get(
                f"{stack.service_url('reports')}/v1/reports/{unit}/{month.expected['month']}",
                params={"format": "html"},
                headers=_auth(stack, level, unit),
            )
        assert page.status_code == 200
        saved = ARTIFACTS / f"report-live-{name}.html"
        saved.write_text(page.text, encoding="utf-8")
        probed = tmp_path / f"{name}.html"
        probed.write_text(page.text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = (
            await asyncio.to_thread(
                chromium,
                tmp_path / f"p-{name}",
                "--window-size=1000,1400",
                "--dump-dom",
                probed.as_uri(),
            )
        ).stdout
        overflow = re.search(r'data-overflow="([^"]*)"', dom)
        assert overflow, "the probe did not run"
        assert json.loads(html_lib.unescape(overflow.group(1))) == [], f"{name}: overflow"
        assert "BÁO CÁO" in dom and "ĐẢNG CỘNG SẢN VIỆT NAM" in dom
        assert (ward["name"] if name == "ward" else district["name"]) in dom
        shot = ARTIFACTS / f"report-live-{name}.png"
        shot.unlink(missing_ok=True)
        await asyncio.to_thread(
            chromium,
            tmp_path / f"s-{name}",
            "--window-size=1000,2600",
            f"--screenshot={shot}",
            saved.as_uri(),
        )
        assert shot.stat().st_size > 50_000
