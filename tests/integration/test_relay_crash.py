"""kill -9 of the relay in the middle of publishing: nothing lost, nothing reordered;
a re-published event is the same event id."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import ClassVar

import asyncpg
from prometheus_client import CollectorRegistry

from ops.stack import Stack
from services.meetings.adapters.event_store import EventMetadata, PostgresEventStore
from services.meetings.adapters.metrics import MeetingsMetrics
from shared.contract import DomainEvent
from tests.integration.helpers import close_pool, eventually, metric_value, read_topic, unique_ward

STREAMS, EVENTS_PER_STREAM = 120, 250
TOTAL = STREAMS * EVENTS_PER_STREAM


class RelayProbe(DomainEvent):
    """A test-only event type: the consumers do not know it and skip it."""

    event_type: ClassVar[str] = "RelayProbe"
    n: int


async def _published(stack: Stack) -> float:
    return await metric_value(stack, "meetings", "chibo_relay_published_events_total") or 0.0


async def test_kill_9_mid_batch_loses_nothing_and_keeps_order(running_stack: Stack) -> None:
    stack = running_stack
    wards = [unique_ward() for _ in range(4)]
    await asyncio.to_thread(stack.stop_part, "meetings")

    # A backlog written while no relay runs: 30,000 events over 120 streams and 4 wards.
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    assert pool is not None
    store = PostgresEventStore(pool, MeetingsMetrics(CollectorRegistry()), 0)
    meta = EventMetadata(actor="test", source="test", occurred_at=datetime.now(UTC))
    written: dict[str, list[str]] = {}
    try:
        for s in range(STREAMS):
            ward = wards[s % len(wards)]
            stream = f"probe-{ward}-{s}"
            async with store.transaction() as conn:
                result = await store.append(
                    conn,
                    stream,
                    ward,
                    0,
                    [RelayProbe(n=i) for i in range(EVENTS_PER_STREAM)],
                    meta,
                )
            written[stream] = [str(e) for e in result.event_ids]
    finally:
        await close_pool(pool)

    # Small relay batches, so that the kill lands between a send and its checkpoint (and
    # mid-backlog: with one record batch per partition, 200 could relay all 30,000 first).
    await asyncio.to_thread(stack.start_service, "meetings", {"RELAY_BATCH_SIZE": "50"})

    async def relay_under_way() -> float | None:
        published = await _published(stack)
        return published if published > 0 else None

    await eventually(relay_under_way, interval_s=0.01, what="relay publishing the backlog")
    await asyncio.to_thread(stack.stop_part, "meetings", kill=True)  # kill -9
    checkpoint = await asyncpg.connect(stack.database_url)
    try:
        behind = await checkpoint.fetchval(
            "select count(*) from meetings.events e, meetings.relay_checkpoint c"
            " where (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)"
            " and e.stream_id like 'probe-%' and e.ward_id = any($1::text[])",
            wards,
        )
    finally:
        await checkpoint.close()
    assert 0 < behind < TOTAL, f"the kill did not land mid-backlog ({behind} of {TOTAL} left)"

    await asyncio.to_thread(stack.start_service, "meetings")

    ours = set(wards)

    def every_event_seen(records: list) -> bool:
        ids = {
            json.loads(r.value)["event_id"]
            for r in records
            if r.key
            and r.key.decode() in ours
            and r.headers
            and dict(r.headers).get("event_type") == b"RelayProbe"
        }
        return len(ids) == TOTAL

    records = await read_topic(
        stack.kafka_bootstrap, "chibo.events.v1", until=every_event_seen, timeout_s=120
    )
    by_stream: dict[str, list[tuple[int, str]]] = {}
    duplicates = 0
    seen: set[str] = set()
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if not record.key or record.key.decode() not in ours:
            continue
        envelope = json.loads(record.value)
        if envelope["event_type"] != "RelayProbe":
            continue
        if envelope["event_id"] in seen:
            duplicates += 1  # a re-publish after the crash: same id, dropped by consumers
            continue
        seen.add(envelope["event_id"])
        by_stream.setdefault(envelope["stream_id"], []).append(
            (envelope["stream_version"], envelope["event_id"])
        )
    assert by_stream.keys() == written.keys()
    for stream, events in by_stream.items():
        # First appearances in partition order are exactly versions 1..N, with the ids written.
        assert [v for v, _ in events] == list(range(1, EVENTS_PER_STREAM + 1)), stream
        assert [e for _, e in events] == written[stream], stream
    assert duplicates <= 2 * 200  # at most the in-flight batch is sent again
