"""The command bus's batch path on the real database: decisions in memory, a few
statements per batch, and a one-by-one retry that refuses only the loser of a race."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from ops.stack import Stack
from services.meetings.adapters.event_store import (
    AppendResult,
    EventMetadata,
    PostgresEventStore,
)
from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.adapters.org_directory import OrgDirectory
from services.meetings.domain.petition import PetitionPolicy
from services.meetings.service_layer.handlers import CommandBus, CommandContext, Rejection
from shared.auth import Principal, Role
from shared.clock import SystemClock
from shared.contract import DomainEvent, MeetingKind, MeetingScheduled, ScheduleMeeting
from shared.contract.commands import (
    CancelMeeting,
    IssueOrientation,
    RegisterCell,
    RescheduleMeeting,
)
from tests.integration.helpers import close_pool, read_topic, unique_ward

SYSTEM = Principal(subject="test", role=Role.SYSTEM_PUBLISHER, scope_level="system")


@pytest.fixture()
async def bus_and_pool(running_stack: Stack) -> AsyncIterator[tuple[CommandBus, asyncpg.Pool]]:
    pool = await asyncpg.create_pool(running_stack.database_url, min_size=2, max_size=4)
    assert pool is not None
    metrics = MeetingsMetrics(CollectorRegistry())
    store = PostgresEventStore(pool, metrics)
    policy = PetitionPolicy.parse("cell:7,ward:15,district:30,province:45", 180)
    yield CommandBus(store, OrgDirectory(pool), SystemClock(), metrics, policy), pool
    await close_pool(pool)


def schedule(ward: str, n: int) -> ScheduleMeeting:
    return ScheduleMeeting(
        meeting_id=f"{ward}.m{n}",
        ward_id=ward,
        cell_id=f"{ward}.to-01",
        kind=MeetingKind.REGULAR,
        scheduled_start=datetime(2026, 12, 3, 12, 30, tzinfo=UTC),
    )


async def register_cell(bus: CommandBus, ward: str) -> None:
    """The cell ``schedule`` names: a ward's meetings are of its own registered cells."""
    cell = RegisterCell.model_validate(
        {"cell_id": f"{ward}.to-01", "ward_id": ward, "name": "Chi bộ Tổ dân phố 1"}
    )
    assert isinstance(await bus.handle(cell, ctx()), AppendResult)


def redone(bus: CommandBus) -> float:
    """Batches rolled back after a write conflict and redone one command at a time."""
    value = bus._metrics.registry.get_sample_value("chibo_command_batches_redone_total")
    return value or 0.0


def ctx(key: str | None = None) -> CommandContext:
    return CommandContext(principal=SYSTEM, source="test", door="kafka", idempotency_key=key)


async def test_a_batch_with_repeats_decides_each_in_order(
    bus_and_pool: tuple[CommandBus, asyncpg.Pool],
) -> None:
    bus, pool = bus_and_pool
    ward = unique_ward()
    await register_cell(bus, ward)
    key = f"test:{uuid.uuid4()}"
    outcomes = await bus.handle_batch(
        [
            (schedule(ward, 1), ctx(key)),
            (schedule(ward, 1), ctx()),  # the same meeting again: a rule violation
            (schedule(ward, 1), ctx(key)),  # the same key again: the first result
            (schedule(ward, 2), ctx()),
        ]
    )
    first, again, replay, other = outcomes
    assert isinstance(first, AppendResult) and not first.replayed
    assert isinstance(again, Rejection) and again.code == "already_exists"
    assert isinstance(replay, AppendResult) and replay.replayed
    assert replay.event_ids == first.event_ids
    assert isinstance(other, AppendResult) and other.stream_version == 1
    rows = await pool.fetch(
        "select stream_id, stream_version from meetings.events where ward_id = $1"
        " and stream_id like 'meeting-%' order by global_position",
        ward,
    )
    assert [(r["stream_id"], r["stream_version"]) for r in rows] == [
        (f"meeting-{ward}.m1", 1),
        (f"meeting-{ward}.m2", 1),
    ]


async def test_a_race_inside_a_batch_refuses_only_the_loser(
    bus_and_pool: tuple[CommandBus, asyncpg.Pool],
) -> None:
    bus, pool = bus_and_pool
    ward = unique_ward()
    await register_cell(bus, ward)
    store = PostgresEventStore(pool, MeetingsMetrics(CollectorRegistry()))
    # Another writer holds meeting 1's stream, uncommitted, while the batch runs.
    rival = await pool.acquire()
    rival_tx = rival.transaction()
    await rival_tx.start()
    rival_event = MeetingScheduled(**schedule(ward, 1).model_dump())
    meta = EventMetadata(actor="rival", source="test", occurred_at=datetime.now(UTC))
    await store.append(rival, f"meeting-{ward}.m1", ward, 0, [rival_event], meta)

    batch = asyncio.create_task(bus.handle_batch([(schedule(ward, n), ctx()) for n in (1, 2, 3)]))
    deadline = asyncio.get_running_loop().time() + 10
    while not await pool.fetchval(  # the batch's write waits for the rival's row
        "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
        " and query like '%meetings.streams%'"
    ):
        assert asyncio.get_running_loop().time() < deadline, "the batch never waited"
        await asyncio.sleep(0.01)
    await rival_tx.commit()  # the batch's bulk write now finds meeting 1 taken
    await pool.release(rival)
    loser, second, third = await batch
    assert redone(bus) == 1

    assert isinstance(loser, Rejection)
    assert loser.code in ("already_exists", "concurrency_conflict")
    assert isinstance(second, AppendResult) and isinstance(third, AppendResult)
    actors = await pool.fetch(
        "select stream_id, actor from meetings.events where ward_id = $1"
        " and stream_id like 'meeting-%' order by stream_id",
        ward,
    )
    assert [(r["stream_id"], r["actor"]) for r in actors] == [
        (f"meeting-{ward}.m1", "rival"),
        (f"meeting-{ward}.m2", "system_publisher:test"),
        (f"meeting-{ward}.m3", "system_publisher:test"),
    ]


async def test_a_refused_command_naming_another_ward_does_not_send_the_batch_to_the_slow_path(
    bus_and_pool: tuple[CommandBus, asyncpg.Pool],
) -> None:
    """The stream rows a batch moves carry the wards of the commands that moved them, not
    of a later command refused for the same stream: else the version check misses, and
    the whole batch is redone one command per transaction for nothing."""
    bus, pool = bus_and_pool
    ward, other = unique_ward(), unique_ward()
    await register_cell(bus, ward)
    assert isinstance(await bus.handle(schedule(ward, 1), ctx()), AppendResult)
    moved = RescheduleMeeting(
        meeting_id=f"{ward}.m1",
        ward_id=ward,
        cell_id=f"{ward}.to-01",
        scheduled_start=datetime(2026, 12, 4, 12, 30, tzinfo=UTC),
        reason="Trùng lịch họp của phường",
    )
    intruder = schedule(ward, 1).model_copy(update={"ward_id": other})
    done, refused = await bus.handle_batch([(moved, ctx()), (intruder, ctx())])

    assert isinstance(done, AppendResult) and done.stream_version == 2
    assert isinstance(refused, Rejection) and refused.code == "already_exists"
    assert redone(bus) == 0  # written at once, in the batch's one transaction
    rows = await pool.fetch(
        "select stream_version, ward_id from meetings.events where stream_id = $1"
        " order by stream_version",
        f"meeting-{ward}.m1",
    )
    assert [(r["stream_version"], r["ward_id"]) for r in rows] == [(1, ward), (2, ward)]


def reschedule(ward: str, n: int, hour: int) -> RescheduleMeeting:
    return RescheduleMeeting(
        meeting_id=f"{ward}.m{n}",
        ward_id=ward,
        cell_id=f"{ward}.to-01",
        scheduled_start=datetime(2026, 12, 4, hour, 30, tzinfo=UTC),
        reason="Trùng lịch họp của phường",
    )


def rival_bus(pool: asyncpg.Pool) -> CommandBus:
    """Another writer on the same database (the HTTP door, the scheduler, a replica)."""
    metrics = MeetingsMetrics(CollectorRegistry())
    policy = PetitionPolicy.parse("cell:7,ward:15,district:30,province:45", 180)
    return CommandBus(
        PostgresEventStore(pool, metrics), OrgDirectory(pool), SystemClock(), metrics, policy
    )


Move = Callable[[], Awaitable[object]]


def interleave(bus: CommandBus, before: dict[int, Move], after: dict[int, Move]) -> None:
    """Run a rival's command (committed) before or after the bus's n-th load of streams."""
    store = bus._store
    load_many = store.load_many
    calls = 0

    async def load_beside_a_rival(
        stream_ids: list[str], conn: asyncpg.Connection | None = None
    ) -> dict[str, list[DomainEvent]]:
        nonlocal calls
        calls += 1
        if calls in before:
            await before[calls]()
        loaded = await load_many(stream_ids, conn)
        if calls in after:
            await after[calls]()
        return loaded

    store.load_many = load_beside_a_rival  # type: ignore[method-assign]


async def test_a_redone_batch_keeps_every_streams_relay_order_in_version_order(
    running_stack: Stack, bus_and_pool: tuple[CommandBus, asyncpg.Pool]
) -> None:
    """The reviewer's interleaving: a rival moves meeting 1 after the batch loaded it (so
    the batch is redone), then commits meeting 2's version 2 after the redo wrote meeting
    1 and before it loads meeting 2. The relay publishes in (transaction id, position)
    order; a redo that kept one transaction took its id before the rival's and published
    meeting 2's version 3 before version 2, which every consumer then dropped."""
    bus, pool = bus_and_pool
    ward = unique_ward()
    await register_cell(bus, ward)
    rival = rival_bus(pool)
    assert all(
        isinstance(o, AppendResult)
        for o in await bus.handle_batch([(schedule(ward, 1), ctx()), (schedule(ward, 2), ctx())])
    )
    interleave(
        bus,
        # Load 1 is the batch's; load 2 and 3 are the redo's, meeting 1 then meeting 2.
        after={1: lambda: rival.handle(reschedule(ward, 1, 7), ctx())},
        before={3: lambda: rival.handle(reschedule(ward, 2, 8), ctx())},
    )
    outcomes = await bus.handle_batch(
        [(reschedule(ward, 1, 9), ctx()), (reschedule(ward, 2, 10), ctx())]
    )
    assert redone(bus) == 1
    first, second = outcomes
    assert isinstance(first, AppendResult) and first.stream_version == 3
    assert isinstance(second, AppendResult) and second.stream_version == 3

    relay_order = await pool.fetch(
        "select stream_id, stream_version from meetings.events where ward_id = $1"
        " order by transaction_id, global_position",  # the relay's order (adapters/relay.py)
        ward,
    )
    for n in (1, 2):
        stream = f"meeting-{ward}.m{n}"
        versions = [r["stream_version"] for r in relay_order if r["stream_id"] == stream]
        assert versions == [1, 2, 3], stream

    # And on the topic, as consumers read it: each stream's versions in partition order.
    def meetings_of(records: list) -> list[dict]:
        ours = (json.loads(r.value) for r in records if r.key == ward.encode())
        return [e for e in ours if e["stream_id"].startswith("meeting-")]

    def all_six(records: list) -> bool:
        return len(meetings_of(records)) >= 6

    records = await read_topic(running_stack.kafka_bootstrap, "chibo.events.v1", all_six)
    published = meetings_of(records)
    for n in (1, 2):
        stream = f"meeting-{ward}.m{n}"
        versions = [e["stream_version"] for e in published if e["stream_id"] == stream]
        assert versions == [1, 2, 3], stream


async def test_a_key_sent_twice_in_a_redone_batch_is_answered_as_a_replay(
    bus_and_pool: tuple[CommandBus, asyncpg.Pool],
) -> None:
    """A source re-sent a message while another stream of the batch raced: the copy is
    answered from the first one's result, as without the race, not refused as a conflict."""
    bus, pool = bus_and_pool
    ward = unique_ward()
    await register_cell(bus, ward)
    rival = rival_bus(pool)
    await bus.handle_batch([(schedule(ward, 1), ctx()), (schedule(ward, 2), ctx())])
    interleave(bus, before={}, after={1: lambda: rival.handle(reschedule(ward, 2, 7), ctx())})
    key = f"kafka:meeting-app:{uuid.uuid4()}"
    first, again, other = await bus.handle_batch(
        [
            (reschedule(ward, 1, 9), ctx(key)),
            (reschedule(ward, 1, 9), ctx(key)),  # the same message, re-sent
            (reschedule(ward, 2, 10), ctx()),
        ]
    )
    assert redone(bus) == 1
    assert isinstance(first, AppendResult) and not first.replayed
    assert isinstance(again, AppendResult) and again.replayed
    assert again.event_ids == first.event_ids and again.stream_version == 2
    assert isinstance(other, AppendResult) and other.stream_version == 3
    versions = await pool.fetch(
        "select stream_version from meetings.events where stream_id = $1",
        f"meeting-{ward}.m1",
    )
    assert sorted(r["stream_version"] for r in versions) == [1, 2]


async def test_a_key_stored_by_a_rival_during_the_redo_is_answered_as_a_replay(
    bus_and_pool: tuple[CommandBus, asyncpg.Pool],
) -> None:
    """The same message reached two writers (a re-send through another replica). The
    batch is redone because of another stream's race; between the redo's key read and
    its write, the rival commits the message with the same key. The redo's write then
    meets the rival's stream version: the command is decided once more, reads the key
    the rival stored, and is answered as a replay, not refused as a conflict."""
    bus, pool = bus_and_pool
    ward = unique_ward()
    await register_cell(bus, ward)
    rival = rival_bus(pool)
    await bus.handle_batch([(schedule(ward, 1), ctx()), (schedule(ward, 2), ctx())])
    key = f"kafka:meeting-app:{uuid.uuid4()}"
    interleave(
        bus,
        # Load 1 is the batch's; load 2 is the redo's of meeting 1, after its key read.
        before={},
        after={
            1: lambda: rival.handle(reschedule(ward, 2, 7), ctx()),
            2: lambda: rival.handle(reschedule(ward, 1, 9), ctx(key)),
        },
    )
    first, other = await bus.handle_batch(
        [(reschedule(ward, 1, 9), ctx(key)), (reschedule(ward, 2, 10), ctx())]
    )
    assert redone(bus) == 1
    assert isinstance(first, AppendResult), first
    assert first.replayed and first.stream_version == 2
    assert isinstance(other, AppendResult) and other.stream_version == 3
    versions = await pool.fetch(
        "select stream_version from meetings.events where stream_id = $1",
        f"meeting-{ward}.m1",
    )
    assert sorted(r["stream_version"] for r in versions) == [1, 2]


async def test_a_key_sent_again_with_another_command_is_refused(
    bus_and_pool: tuple[CommandBus, asyncpg.Pool],
) -> None:
    """A key names one command: sent again with another stream or another command type,
    in the same batch or a later one, it is refused instead of answered with the first
    command's result (which would drop the new command without a word)."""
    bus, pool = bus_and_pool
    ward = unique_ward()
    await register_cell(bus, ward)
    key = f"kafka:meeting-app:{uuid.uuid4()}"
    cancel = CancelMeeting(
        meeting_id=f"{ward}.m1", ward_id=ward, cell_id=f"{ward}.to-01", reason="Mưa bão"
    )
    first, other_stream = await bus.handle_batch(
        [(schedule(ward, 1), ctx(key)), (schedule(ward, 2), ctx(key))]
    )
    (other_type,) = await bus.handle_batch([(cancel, ctx(key))])
    (same,) = await bus.handle_batch([(schedule(ward, 1), ctx(key))])

    assert isinstance(first, AppendResult) and not first.replayed
    for refused in (other_stream, other_type):
        assert isinstance(refused, Rejection) and refused.code == "idempotency_key_reused"
        assert refused.status == 422 and "khóa" in refused.message_vi
        assert refused.details == {
            "stream_id": f"meeting-{ward}.m1",
            "command_type": "ScheduleMeeting",
        }
    assert isinstance(same, AppendResult) and same.replayed
    assert same.event_ids == first.event_ids
    rows = await pool.fetch(
        "select stream_id, event_type from meetings.events"
        " where ward_id = $1 and stream_id like 'meeting-%'",
        ward,
    )
    assert [(r["stream_id"], r["event_type"]) for r in rows] == [
        (f"meeting-{ward}.m1", "MeetingScheduled")
    ]


async def test_a_decision_that_crashes_refuses_that_command_and_the_batch_goes_on(
    bus_and_pool: tuple[CommandBus, asyncpg.Pool],
) -> None:
    """A value the contract lets through and a decision cannot handle (as months 9999-12
    once were) is one command's invalid_command, never the whole batch's failure."""
    bus, pool = bus_and_pool
    ward = unique_ward()
    gap = IssueOrientation.model_construct(  # as if the contract still allowed it
        orientation_id=f"{ward}.o", ward_id=ward, month="9999-12", topics=["x"]
    )
    cell = RegisterCell.model_validate(
        {"cell_id": f"{ward}.to-01", "ward_id": ward, "name": "Chi bộ Tổ dân phố 1"}
    )
    crashed, registered = await bus.handle_batch([(gap, ctx()), (cell, ctx())])

    assert isinstance(crashed, Rejection)
    assert (crashed.code, crashed.status) == ("invalid_command", 422)
    assert crashed.message_vi and crashed.details == {"error": "ValueError"}
    assert isinstance(registered, AppendResult)
    rows = await pool.fetch("select stream_id from meetings.events where ward_id = $1", ward)
    assert [r["stream_id"] for r in rows] == [f"cell-{ward}.to-01"]
    registry = bus._metrics.registry
    errors = "chibo_command_decision_errors_total"
    assert registry.get_sample_value(errors, {"command": "IssueOrientation"}) == 1
    assert (
        registry.get_sample_value(
            "chibo_commands_total",
            {"command": "IssueOrientation", "door": "kafka", "outcome": "rejected_invalid_command"},
        )
        == 1
    )


async def test_a_meeting_needs_a_registered_cell_of_its_ward(
    bus_and_pool: tuple[CommandBus, asyncpg.Pool],
) -> None:
    """The cell is read with the batch (once per distinct cell), registrations earlier in
    the same batch included."""
    bus, _ = bus_and_pool
    ward, other = unique_ward(), unique_ward()
    cell = RegisterCell.model_validate(
        {"cell_id": f"{ward}.to-01", "ward_id": ward, "name": "Chi bộ Tổ dân phố 1"}
    )
    foreign = schedule(ward, 3).model_copy(update={"meeting_id": f"{other}.m3", "ward_id": other})
    outcomes = await bus.handle_batch(
        [
            (schedule(ward, 1), ctx()),  # before its cell is registered
            (cell, ctx()),
            (schedule(ward, 2), ctx()),
            (foreign, ctx()),
        ]
    )
    codes = [o.code if isinstance(o, Rejection) else "ok" for o in outcomes]
    assert codes == ["unknown_cell", "ok", "ok", "wrong_ward"]
