"""What a reports replica does with the tables' projection version: rebuild only tables
built by an older version (never back to its own from a newer one), and, live, refuse a
batch whose claim finds the tables of another version: rolled back, not acknowledged,
counted, and the consumer stops. The guard rides in the claim statement: no round trip
of its own. The database and the broker are stand-ins; tests/integration has the real
rolling update (test_projection_rollout.py, test_rebuild_at_start.py)."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from services.reports.service_layer.rebuild import (
    PROJECTION_VERSION,
    Built,
    compare,
    projection_guard,
)
from shared.consumer import BatchGuard, EventConsumer
from shared.settings import KafkaSettings
from tests.unit.test_consumer_reading import FakeBroker, record
from tests.unit.test_event_reading import value


@pytest.mark.parametrize(
    ("built", "ours", "state"),
    [
        (None, 3, Built.OUTDATED),  # never built: a new install
        (2, 3, Built.OUTDATED),  # an upgrade: rebuild
        (3, 3, Built.CURRENT),
        (4, 3, Built.NEWER),  # an old replica: neither rebuild back nor consume
    ],
)
def test_only_tables_of_an_older_version_are_rebuilt(
    built: int | None, ours: int, state: Built
) -> None:
    assert compare(built, ours) is state


def test_the_guard_compares_the_stored_version_with_the_code_s() -> None:
    guard = projection_guard()
    assert guard.name == "projection_version"
    assert f"max(version) = {PROJECTION_VERSION}," in guard.condition
    assert "reports.projection_version" in guard.condition
    assert f"= {PROJECTION_VERSION - 1}," in projection_guard(PROJECTION_VERSION - 1).condition


class GuardedConnection:
    """``claim_batch``'s statement, answering whether the guard held (its 4th column)."""

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self.statements: list[str] = []
        self.rolled_back = 0

    async def fetch(self, sql: str, rows: str) -> list[Any]:
        self.statements.append(sql)
        return [(stream, None, hi, self.allowed) for stream, _lo, hi in json.loads(rows)]

    @asynccontextmanager
    async def transaction(self):  # type: ignore[no-untyped-def]
        try:
            yield
        except BaseException:
            self.rolled_back += 1
            raise


class Pool:
    def __init__(self, conn: GuardedConnection) -> None:
        self.conn = conn

    @asynccontextmanager
    async def acquire(self):  # type: ignore[no-untyped-def]
        yield self.conn


class Message:
    def __init__(self, records: list[Any]) -> None:
        self.raw_message = tuple(records)
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.acked = False
        self.consumer = SimpleNamespace(
            seek=lambda partition, offset: self.seeks.append((partition, offset))
        )

    async def ack(self) -> None:
        self.acked = True


GUARD = BatchGuard("projection_version", "select true", "another version built the tables")


def consumer(conn: GuardedConnection) -> tuple[EventConsumer, list[Any], CollectorRegistry]:
    applied: list[Any] = []

    async def apply_batch(_conn: Any, items: list[Any]) -> None:
        applied.extend(items)

    async def apply(_conn: Any, _envelope: Any, _event: Any) -> None:
        raise AssertionError("the batch path is used")

    registry = CollectorRegistry()
    c = EventConsumer(
        "reports",
        "reports",
        Pool(conn),  # type: ignore[arg-type]
        FakeBroker(),  # type: ignore[arg-type]
        KafkaSettings(),
        apply,
        registry,
        apply_batch=apply_batch,
        guard=GUARD,
    )
    return c, applied, registry


def refused(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value(
        "chibo_consumer_refused_batches_total",
        {"consumer": "reports", "guard": "projection_version"},
    )


def batch() -> list[Any]:
    return [
        record(7, value()),
        record(8, value(stream_id="meeting-b", event_id="11111111-1111-4111-8111-111111111111")),
    ]


def test_a_batch_that_passes_the_guard_is_applied_with_one_claim_statement() -> None:
    conn = GuardedConnection(allowed=True)
    c, applied, registry = consumer(conn)
    message = Message(batch())

    asyncio.run(c(message))  # type: ignore[arg-type]

    assert len(applied) == 2 and message.acked
    assert len(conn.statements) == 1  # the guard is folded into the claim
    assert "(select true) as allowed" in conn.statements[0]
    assert refused(registry) == 0
    assert c.refused is None


def test_a_batch_that_fails_the_guard_is_rolled_back_unacknowledged_and_stops_the_consumer() -> (
    None
):
    conn = GuardedConnection(allowed=False)
    c, applied, registry = consumer(conn)
    stops: list[str] = []

    async def stop() -> None:
        stops.append("stopped")

    c.stop_consuming = stop
    message = Message(batch())

    async def run() -> None:
        await c(message)  # type: ignore[arg-type]
        assert c._stopping is not None
        await c._stopping

    asyncio.run(run())

    assert applied == [] and not message.acked
    assert conn.rolled_back == 1
    assert message.seeks == [(TopicPartition("chibo.events.v1", 0), 7)]  # read again by others
    assert refused(registry) == 1
    assert c.refused == "projection_version"
    assert stops == ["stopped"]
    outcomes = {
        name: registry.get_sample_value(
            "chibo_consumed_events_total", {"consumer": "reports", "outcome": name}
        )
        for name in ("applied", "failed")
    }
    assert outcomes == {"applied": 0, "failed": 0}  # a refusal is not a failure to retry


def test_without_a_way_to_stop_a_refused_batch_is_retried_and_applied_once_the_guard_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    conn = GuardedConnection(allowed=False)
    c, applied, registry = consumer(conn)

    asyncio.run(c(Message(batch())))  # type: ignore[arg-type]
    assert applied == [] and c.refused == "projection_version"

    conn.allowed = True
    message = Message(batch())
    asyncio.run(c(message))  # type: ignore[arg-type]
    assert len(applied) == 2 and message.acked
    assert c.refused is None
    assert refused(registry) == 1


_real_sleep = asyncio.sleep


async def _no_sleep(_seconds: float) -> None:
    await _real_sleep(0)
