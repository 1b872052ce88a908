"""The demo generator's month, published through the Kafka door of the real stack: every
command accepted, the events it says, and a second publish appends nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from generator.build import generate
from generator.commands import PlannedCommand
from generator.model import GeneratorConfig
from generator.month import previous_month
from generator.publish import idempotency_key, publish
from ops.stack import Stack
from shared.contract.commands import RegisterUnit
from tests.integration.helpers import fetch


async def _events_by_type(stack: Stack, wards: list[str]) -> dict[str, int]:
    rows = await fetch(
        stack.database_url,
        "select event_type, count(*) as n from meetings.events where ward_id = any($1::text[])"
        " group by event_type",
        wards,
    )
    return {r["event_type"]: r["n"] for r in rows}


async def test_a_small_district_month_is_accepted_whole_and_only_once(
    running_stack: Stack,
) -> None:
    year, month = previous_month(datetime.now(UTC))  # wholly past: meetings may be opened
    g = generate(GeneratorConfig(seed=11, wards=2, cells=6), year, month)
    units = [u.unit_id for u in g.district.units] + [w.unit_id for w in g.district.wards]

    report = await publish(
        g.commands,
        running_stack.kafka_bootstrap,
        running_stack.database_url,
        timeout_s=120,
        show_progress=False,
    )
    assert report.rejected == []  # no DLQ record names one of ours
    assert report.missing == []
    assert report.accepted == len(g.commands)
    keys = await fetch(
        running_stack.database_url,
        "select count(*) as n from meetings.idempotency_keys"
        " where idempotency_key = any($1::text[])",
        [idempotency_key(c.message_id) for c in g.commands],
    )
    assert keys[0]["n"] == len(g.commands)
    assert await _events_by_type(running_stack, units) == g.expected["events"]["by_type"]

    again = await publish(
        g.commands,
        running_stack.kafka_bootstrap,
        running_stack.database_url,
        timeout_s=120,
        show_progress=False,
    )
    assert again.ok and again.rejected == []
    # Their keys were there already: make sure the service has read the replays too, with
    # a marker behind them on every key (so every partition) they used.
    markers = [
        PlannedCommand(
            position=n,
            message_id=f"marker-{uuid.uuid4().hex}",
            key=key,
            occurred_at=datetime.now(UTC),
            stage=0,
            command=RegisterUnit(unit_id=f"{key}.mk", parent_id=key, level="marker", name="Mốc"),
            correlation_id=uuid.uuid4(),
        )
        for n, key in enumerate(sorted({c.key for c in g.commands}))
    ]
    marked = await publish(
        markers,
        running_stack.kafka_bootstrap,
        running_stack.database_url,
        timeout_s=120,
        show_progress=False,
    )
    assert marked.ok
    assert await _events_by_type(running_stack, units) == g.expected["events"]["by_type"]


async def test_a_rejected_command_is_reported_with_its_reason_not_as_missing(
    running_stack: Stack,
) -> None:
    # The same unit registered twice under two message ids: the second is a domain
    # rejection, which the DLQ watch must see (it once assigned no partition at all).
    unit = f"u{uuid.uuid4().hex[:10]}"

    def register(n: int) -> PlannedCommand:
        return PlannedCommand(
            position=n,
            message_id=f"reject-{uuid.uuid4().hex}",
            key=unit,
            occurred_at=datetime.now(UTC),
            stage=n,
            command=RegisterUnit(unit_id=unit, parent_id=None, level="ward", name="Phường Thử"),
            correlation_id=uuid.uuid4(),
        )

    first, second = register(0), register(1)
    report = await publish(
        [first, second],
        running_stack.kafka_bootstrap,
        running_stack.database_url,
        timeout_s=60,
        show_progress=False,
    )
    assert report.accepted == 1 and report.missing == []
    assert [(r.message_id, r.reason) for r in report.rejected] == [
        (second.message_id, "rejected_already_exists")
    ]
