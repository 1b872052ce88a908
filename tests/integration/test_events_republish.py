"""`chibo events republish` against the real stack: the relay publishes the whole event
store again, to the same topic or to a new one, while the consumers' projections stay as
they were (every re-published event is a duplicate to them); and it refuses while a
relay runs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from typer.testing import CliRunner

from ops.cli import app
from ops.events import topic_state
from ops.stack import SERVICES, Stack
from services.meetings.adapters.relay import RELAY_APPLICATION_NAME
from shared.settings import KafkaSettings
from tests.integration.helpers import (
    eventually,
    fetch,
    metric_value,
    registered_ward,
    schedule_body,
    ward_auth,
)

TOPIC = "chibo.events.v1"


def _env(stack: Stack, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "DATABASE_URL": stack.database_url,
        "COLUMNS": "200",
        **extra,
    }


def chibo(stack: Stack, *args: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env=_env(stack, **env))


async def _checkpoint(stack: Stack) -> tuple[str, int] | None:
    rows = await fetch(
        stack.database_url,
        "select transaction_id::text as txid, global_position from meetings.relay_checkpoint"
        " where relay_name = 'kafka-events'",
    )
    return (rows[0]["txid"], rows[0]["global_position"]) if rows else None


async def _store(stack: Stack) -> dict[str, list[str]]:
    """Each stream's event ids in version order, as the event store holds them."""
    rows = await fetch(
        stack.database_url,
        "select stream_id, event_id::text from meetings.events order by stream_id, stream_version",
    )
    streams: dict[str, list[str]] = {}
    for row in rows:
        streams.setdefault(row["stream_id"], []).append(row["event_id"])
    return streams


async def _projections(stack: Stack, *, with_applied_at: bool = True) -> dict[str, list[str]]:
    """Every row of the reports projections, and notifications' applied versions and
    delivery log (which notice, to whom, on which channel): what a re-applied event
    would change."""
    skip = set() if with_applied_at else {"applied_at"}
    tables = await fetch(
        stack.database_url,
        "select table_name from information_schema.tables where table_schema = 'reports'"
        " and table_name <> 'projection_version'",  # which code built them, and when
    )
    queries = {
        f"reports.{t['table_name']}": f"select * from reports.{t['table_name']}" for t in tables
    }
    queries["notifications.applied_streams"] = "select * from notifications.applied_streams"
    queries["notifications.deliveries"] = (
        "select delivery_id, trigger_event_id, trigger, recipient, channel, subject"
        " from notifications.deliveries"
        " where trigger_event_id in (select event_id from meetings.events)"
    )
    dump = {}
    for name, query in queries.items():
        rows = await fetch(stack.database_url, query)
        dump[name] = sorted(
            json.dumps({k: v for k, v in dict(r).items() if k not in skip}, default=str)
            for r in rows
        )
    return dump


async def _caught_up(stack: Stack, **env: str) -> None:
    """The relay has published everything, and both consumer groups have committed the
    end of every partition of the events topic (`chibo lag`)."""

    async def probe() -> bool:
        result = chibo(stack, "lag", "--json", **env)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        groups = {g["group"]: g for g in report["consumer_groups"]}
        return all(r["pending_events"] == 0 for r in report["relay"]) and all(
            groups[g]["total"] == 0 and groups[g]["partitions"]
            for g in ("chibo-reports", "chibo-notifications")
        )

    await eventually(probe, timeout_s=180, interval_s=0.2, what="relay and consumers caught up")


async def _scheduled_meeting(stack: Stack) -> str:
    """A meeting scheduled over HTTP, with its notice recorded by notifications: events
    that both consumers applied. Its MeetingScheduled event id."""
    ward = await registered_ward(stack)
    async with httpx.AsyncClient(base_url=stack.service_url("meetings")) as client:
        response = await client.post(
            "/v1/meetings", json=schedule_body(ward), headers=ward_auth(stack, ward)
        )
    assert response.status_code == 201, response.text
    [event] = await fetch(
        stack.database_url,
        "select event_id from meetings.events where stream_id = $1 and stream_version = 1",
        response.json()["stream_id"],
    )

    async def noticed() -> bool:
        rows = await fetch(
            stack.database_url,
            "select 1 from notifications.deliveries where trigger_event_id = $1",
            event["event_id"],
        )
        return bool(rows)

    await eventually(noticed, what="the meeting's notice in notifications' delivery log")
    return str(event["event_id"])


async def _end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def _read_from(
    bootstrap: str,
    starts: dict[TopicPartition, int],
    until: Callable[[list[Any]], bool],
    timeout_s: float = 180.0,
) -> list[Any]:
    """The records of the partitions in ``starts``, each from its offset, until ``until``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)

        async def done() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            return until(records)

        await eventually(done, timeout_s=timeout_s, what="the re-published events")
    finally:
        await consumer.stop()
    return records


def _by_stream(records: list[Any]) -> dict[str, list[tuple[int, str]]]:
    """Each stream's (version, event id) in the order the topic holds them (a stream's
    events share its ward's key, so one partition)."""
    streams: dict[str, list[tuple[int, str]]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        envelope = json.loads(record.value)
        streams.setdefault(envelope["stream_id"], []).append(
            (envelope["stream_version"], envelope["event_id"])
        )
    return streams


def _holds_the_store(store: dict[str, list[str]]) -> Callable[[list[Any]], bool]:
    wanted = {e for ids in store.values() for e in ids}

    def check(records: list[Any]) -> bool:
        return wanted <= {json.loads(r.value)["event_id"] for r in records}

    return check


def _assert_in_stream_order(records: list[Any], store: dict[str, list[str]]) -> None:
    """Every event of the store once, each stream's in version order (events appended
    since the store was read may follow them)."""
    topic_streams = _by_stream(records)
    for stream, ids in store.items():
        on_topic = topic_streams.get(stream, [])[: len(ids)]
        assert on_topic == [(v, e) for v, e in enumerate(ids, start=1)], stream


async def _restart_services(stack: Stack, env: dict[str, str] | None = None) -> None:
    for name in SERVICES:
        await asyncio.to_thread(stack.stop_part, name)
    for name in SERVICES:
        await asyncio.to_thread(stack.start_service, name, env)


async def test_it_refuses_while_a_relay_runs(running_stack: Stack) -> None:
    stack = running_stack

    async def leading() -> bool:
        return await metric_value(stack, "meetings", "chibo_relay_is_leader") == 1

    await eventually(leading, what="the meetings relay leading")
    before = await _checkpoint(stack)
    new_topic = f"chibo.events.republish-{uuid.uuid4().hex[:8]}"

    refused = chibo(stack, "events", "republish", "--yes")
    assert refused.exit_code == 1, refused.output
    assert "stop every meetings replica first" in refused.output
    as_json = chibo(stack, "events", "republish", "--yes", "--json", "--to-topic", new_topic)
    assert as_json.exit_code == 1, as_json.output
    assert "stop every meetings replica first" in json.loads(as_json.stdout)["refused"]
    dry = chibo(stack, "events", "republish", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "it would be refused" in dry.stdout
    assert "standing by" not in dry.stdout  # the leader's own connection is not a standby

    # A replica standing by (its relay connected, not leading) would take the lock over
    # and publish into the topic it was started with: refused with --to-topic.
    await asyncio.to_thread(stack.stop_part, "meetings")
    standby = await asyncpg.connect(
        stack.database_url, server_settings={"application_name": RELAY_APPLICATION_NAME}
    )
    try:
        standing_by = chibo(stack, "events", "republish", "--yes", "--to-topic", new_topic)
    finally:
        await standby.close()
        await asyncio.to_thread(stack.start_service, "meetings")
    assert standing_by.exit_code == 1, standing_by.output
    assert "standing by" in standing_by.output
    assert "stop every meetings replica first" in standing_by.output

    assert await _checkpoint(stack) == before  # nothing changed
    settings = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    assert not (await topic_state(settings, new_topic)).exists
    usage = chibo(stack, "events", "republish", "--yes", "--to-topic", TOPIC)
    assert usage.exit_code == 2, usage.output


async def test_republish_to_the_same_topic_changes_no_projection(running_stack: Stack) -> None:
    """The Kafka cluster lost its events (here: the topic keeps them, and its end is where
    the re-published ones start): every event of the store comes again, in order, and
    the consumers drop them all as duplicates."""
    stack = running_stack
    await _scheduled_meeting(stack)
    await _caught_up(stack)
    before = await _projections(stack)
    duplicates_before = {
        service: await metric_value(
            stack, service, "chibo_consumed_events_total", outcome="duplicate"
        )
        or 0.0
        for service in ("reports", "notifications")
    }

    await asyncio.to_thread(stack.stop_part, "meetings")
    store = await _store(stack)
    events = sum(len(ids) for ids in store.values())
    ends = await _end_offsets(stack.kafka_bootstrap, TOPIC)
    result = chibo(stack, "events", "republish", "--yes", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["events"] == events
    assert summary["publishes_to"] == TOPIC
    assert summary["settings"] == {}
    assert await _checkpoint(stack) == ("0", 0)

    await asyncio.to_thread(stack.start_service, "meetings")
    records = await _read_from(stack.kafka_bootstrap, ends, _holds_the_store(store))
    _assert_in_stream_order(records, store)

    await _caught_up(stack)
    assert await _projections(stack) == before
    for service, count in duplicates_before.items():
        now = await metric_value(stack, service, "chibo_consumed_events_total", outcome="duplicate")
        assert (now or 0.0) - count >= events, service


async def test_republish_into_a_new_topic_that_a_rebuild_replays(running_stack: Stack) -> None:
    """The events topic lost its first events (retention): the store goes into a new
    topic with the old one's partitions and unlimited retention; the consumers, started
    on it, read it from its first record and change nothing; a rebuild from it succeeds
    and equals the live projections."""
    stack = running_stack
    await _scheduled_meeting(stack)
    await _caught_up(stack)
    before = await _projections(stack)
    before_rebuild = await _projections(stack, with_applied_at=False)
    new_topic = f"chibo.events.republished-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)

    await asyncio.to_thread(stack.stop_part, "meetings")
    store = await _store(stack)
    events = sum(len(ids) for ids in store.values())
    dry = chibo(stack, "events", "republish", "--to-topic", new_topic, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["refused"] is None
    assert not (await topic_state(kafka, new_topic)).exists  # a dry run changes nothing

    result = chibo(stack, "events", "republish", "--to-topic", new_topic, "--yes")
    assert result.exit_code == 0, result.output
    assert f"KAFKA_EVENTS_TOPIC={new_topic}" in result.stdout
    assert f"publishes all {events:,} events to {new_topic}" in result.stdout
    old, new = await topic_state(kafka, TOPIC), await topic_state(kafka, new_topic)
    assert new.partitions is not None and old.partitions is not None
    assert len(new.partitions) == len(old.partitions)
    assert new.retention == {"retention.ms": -1, "retention.bytes": -1}
    # Again, before anything was published: the empty topic is taken as it is.
    again = chibo(stack, "events", "republish", "--to-topic", new_topic, "--yes", "--json")
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)  # nothing but the JSON on stdout
    assert summary["settings"] == {"KAFKA_EVENTS_TOPIC": new_topic}
    assert (summary["events"], summary["topic_created"]) == (events, False)

    moved = {"KAFKA_EVENTS_TOPIC": new_topic}
    try:
        await _restart_services(stack, moved)
        records = await _read_from(
            stack.kafka_bootstrap,
            {TopicPartition(new_topic, p): 0 for p in new.partitions},
            _holds_the_store(store),
        )
        _assert_in_stream_order(records, store)
        by_id = [json.loads(r.value)["event_id"] for r in records]
        assert len(by_id) == len(set(by_id))  # published once each

        # The groups never read this topic: they start at its earliest offset, so they
        # commit its end (nothing read from the end would commit anything).
        await _caught_up(stack, **moved)
        assert await _projections(stack) == before

        env = {**os.environ, **_env(stack, **moved)}
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ops.cli", "reports", "rebuild", "--json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(cli.communicate(), timeout=300)
        assert cli.returncode == 0, stderr.decode()
        assert json.loads(stdout)["records"] >= events
        # A rebuild applies every stream again (applied_at is now): the rest is equal.
        assert await _projections(stack, with_applied_at=False) == before_rebuild
    finally:
        await _restart_services(stack)  # back on chibo.events.v1 for the other tests
