"""The relay: committed events from the event store to the Kafka events topic.

Gap safety (design invariant 3): identity positions are handed out before commit, so
position N+1 can be visible while N is still in flight. The relay therefore reads in
(transaction id, position) order and only below ``pg_snapshot_xmin(pg_current_snapshot())``,
the oldest transaction still running: every event it can see there is committed, and no
transaction can later commit an event that sorts before them. A transaction takes its id
at its first write, and every writer loads the streams it appends to before its first
write (adapters/event_store.py; a raced batch is redone one command per transaction for
this reason), so the writer of a stream's next version has a higher id than the writer
of the version it loaded: within a stream this order is version order.

Exactly one replica relays at a time: it holds a session advisory lock. The checkpoint
moves only after Kafka acknowledged the whole batch, so a crash re-publishes at most one
batch; consumers drop those duplicates by event id / stream version. The checkpoint is
read only when a replica starts leading: `chibo events republish` (ops/events.py) resets
it to the start, holding the lock, to have the whole store published again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from services.meetings.adapters.metrics import MeetingsMetrics
from shared.kafka import aiokafka_client_kwargs, send_in_record_batches
from shared.logs import get_logger
from shared.settings import KafkaSettings
from shared.tasks import cancel

log = get_logger(__name__)


class CheckpointAhead(RuntimeError):
    """The checkpoint is past every transaction id this database has handed out."""


RELAY_LOCK_KEY = 0x6368_6962_6F72_6C79  # "chiborly": one relay per database
DEFAULT_RELAY_NAME = "kafka-events"  # its row in meetings.relay_checkpoint
# The lock connection's application_name: pg_stat_activity shows every replica's relay,
# leading or standing by (`chibo events republish` refuses while one is connected).
RELAY_APPLICATION_NAME = "chibo-meetings-relay"
LOCK_CHECK_INTERVAL_S = 1.0

_SELECT_BATCH = """
select transaction_id::text::bigint as txid, global_position, event_id::text, event_type,
       schema_version, stream_id, stream_version, ward_id, payload, occurred_at, recorded_at,
       correlation_id::text, causation_id::text, actor, source
from meetings.events
where (transaction_id, global_position) > ($1::text::xid8, $2)
  and transaction_id < pg_snapshot_xmin(pg_current_snapshot())
order by transaction_id, global_position
limit $3
"""

_LAG = """
select count(*) as events, extract(epoch from clock_timestamp() - min(recorded_at)) as seconds
from (select recorded_at from meetings.events
      where (transaction_id, global_position) > ($1::text::xid8, $2)
      order by transaction_id, global_position limit 100000) pending
"""


# JSON text of a string, as json.dumps(..., ensure_ascii=False) writes it (the C encoder).
_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _uuid_or_null(value: Any) -> str:
    return f'"{value}"' if value else "null"


def envelope_json(row: Mapping[str, Any]) -> bytes:
    """The row as an `EventEnvelope` document, built without decoding the stored payload:
    the relay's hot path. A unit test holds it equal to the pydantic model's reading, and
    byte for byte equal to json.dumps(head, ensure_ascii=False) followed by the payload.
    The relay reads the ids as text (cheaper than UUID objects); str() takes either. Ids,
    numbers and times need no escaping; the other texts go through the JSON encoder."""
    return (
        f'{{"event_id": "{row["event_id"]}", "event_type": {_string(row["event_type"])}, '
        f'"schema_version": {row["schema_version"]:d}, "stream_id": {_string(row["stream_id"])}, '
        f'"stream_version": {row["stream_version"]:d}, '
        f'"global_position": {row["global_position"]:d}, "ward_id": {_string(row["ward_id"])}, '
        f'"occurred_at": "{row["occurred_at"].isoformat()}", '
        f'"recorded_at": "{row["recorded_at"].isoformat()}", '
        f'"correlation_id": {_uuid_or_null(row["correlation_id"])}, '
        f'"causation_id": {_uuid_or_null(row["causation_id"])}, '
        f'"actor": {_string(row["actor"])}, "source": {_string(row["source"])}, '
        f'"payload": {row["payload"]}}}'
    ).encode()


def kafka_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """Key = ward id, so one ward's events stay in one partition, in order."""
    return {
        "key": row["ward_id"].encode(),
        "value": envelope_json(row),
        "headers": [
            ("event_type", row["event_type"].encode()),
            ("event_id", str(row["event_id"]).encode()),
            ("schema_version", b"%d" % row["schema_version"]),
        ],
    }


class EventRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        kafka: KafkaSettings,
        metrics: MeetingsMetrics,
        *,
        name: str = DEFAULT_RELAY_NAME,
        batch_size: int = 1000,
        idle_interval_s: float = 0.02,
    ) -> None:
        self._pool = pool
        self._database_url = database_url
        self._kafka = kafka
        self._metrics = metrics
        self._name = name
        self._batch_size = batch_size
        self._idle_interval_s = idle_interval_s
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._position: tuple[int, int] = (0, 0)
        self._partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}  # ward key -> partition, for these partitions
        self._leading = False
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay")
        self._lag_task = asyncio.create_task(self._measure_lag(), name="relay-lag")

    async def stop(self) -> None:
        await cancel(self._task, self._lag_task)
        await self._close_producer()

    def healthy(self) -> bool:
        return self.last_error is None

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._metrics.relay_errors.labels("round").inc()
                self._metrics.relay_leader.set(0)
                log.warning("relay.round_failed", error=self.last_error, retry_in_s=backoff)
                await self._close_producer()
                await asyncio.sleep(backoff)  # back off before reconnecting, not to wait for data
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1

    async def _lead(self) -> None:
        """Hold the relay lock on a dedicated connection and publish while holding it."""
        lock_conn = await asyncpg.connect(
            self._database_url, server_settings={"application_name": RELAY_APPLICATION_NAME}
        )
        try:
            while not await lock_conn.fetchval("select pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                self._metrics.relay_leader.set(0)
                self.last_error = None  # a standby replica is healthy
                await asyncio.sleep(1.0)
            self._metrics.relay_leader.set(1)
            self._leading = True
            log.info("relay.leading", relay=self._name)
            self._position = await self._load_checkpoint()
            await self._check_checkpoint()
            producer = await self._ensure_producer()
            lock_checked = time.monotonic()
            while True:
                published = await self._publish_batch(producer)
                self.last_error = None
                if time.monotonic() - lock_checked > LOCK_CHECK_INTERVAL_S:
                    # If the lock's connection died, another replica may hold the lock now:
                    # stop before two relays publish side by side.
                    await lock_conn.fetchval("select 1")
                    lock_checked = time.monotonic()
                if published == 0:
                    await asyncio.sleep(self._idle_interval_s)
        finally:
            self._leading = False
            # The new leader reports the lag now; a frozen figure here would mislead.
            self._metrics.relay_lag_events.set(0)
            self._metrics.relay_lag_seconds.set(0)
            await lock_conn.close()  # releases the lock

    async def _publish_batch(self, producer: AIOKafkaProducer) -> int:
        txid, position = self._position
        rows = await self._pool.fetch(_SELECT_BATCH, str(txid), position, self._batch_size)
        if not rows:
            return 0
        # Record batches per partition, filled in relay order (not one send() per event).
        topic = self._kafka.events_topic
        partitions = sorted(await producer.partitions_for(topic))
        if partitions != self._partitions:
            self._partitions, self._partition_of = partitions, {}
        futures = await send_in_record_batches(
            producer, topic, map(kafka_record, rows), partitions, self._partition_of
        )
        await asyncio.gather(*futures)  # every record acknowledged before the checkpoint moves
        last = rows[-1]
        self._position = (last["txid"], last["global_position"])
        await self._pool.execute(
            """
            insert into meetings.relay_checkpoint (relay_name, transaction_id, global_position)
            values ($1, $2::text::xid8, $3)
            on conflict (relay_name) do update
              set transaction_id = excluded.transaction_id,
                  global_position = excluded.global_position, updated_at = now()
            """,
            self._name,
            str(self._position[0]),
            self._position[1],
        )
        self._metrics.relay_published.inc(len(rows))
        return len(rows)

    async def _check_checkpoint(self) -> None:
        """A database restored from a logical dump (pg_dump, logical replication) counts
        transaction ids from low again, while the checkpoint it carries names the old
        ones: every new event would sort below it and never be published, and the lag
        would read 0. Refuse to lead on such a checkpoint (docs/operations.md,
        *RelayCheckpointAhead*: re-publish with ``chibo events republish``)."""
        next_txid = await self._pool.fetchval(
            "select pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        )
        ahead = self._position[0] >= next_txid
        self._metrics.relay_checkpoint_ahead.set(1 if ahead else 0)
        if ahead:
            raise CheckpointAhead(
                f"relay checkpoint at transaction {self._position[0]}, but this database's"
                f" next transaction id is {next_txid}: restored from a logical dump?"
                " Run `chibo events republish` (docs/operations.md, RelayCheckpointAhead)"
            )

    async def _load_checkpoint(self) -> tuple[int, int]:
        row = await self._pool.fetchrow(
            "select transaction_id::text::bigint as txid, global_position"
            " from meetings.relay_checkpoint where relay_name = $1",
            self._name,
        )
        return (row["txid"], row["global_position"]) if row else (0, 0)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **aiokafka_client_kwargs(self._kafka),
                enable_idempotence=True,
                acks="all",
                linger_ms=2,
                max_batch_size=512 * 1024,
                request_timeout_ms=15000,
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def _close_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _measure_lag(self) -> None:
        while True:
            if not self._leading:  # a standby knows no position: the leader reports lag
                await asyncio.sleep(2.0)
                continue
            try:
                txid, position = self._position
                row = await self._pool.fetchrow(_LAG, str(txid), position)
                self._metrics.relay_lag_events.set(row["events"])
                self._metrics.relay_lag_seconds.set(float(row["seconds"] or 0.0))
            except Exception as exc:
                log.warning("relay.lag_measure_failed", error=str(exc))
            await asyncio.sleep(2.0)

    @property
    def position(self) -> tuple[int, int]:
        return self._position
