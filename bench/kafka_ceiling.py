"""The reference figures: raw aiokafka produce and consume throughput on the same broker.

Every Kafka-bound figure of the project (relay, consumers, end-to-end) is reported as a
ratio of these two, measured in the same run. They are the ceilings, so their own ceiling
is themselves (ratio 1.0). Later benchmarks look them up with
``ctx.figure(RAW_PRODUCE)`` / ``ctx.figure(RAW_CONSUME)`` after declaring
``requires=(NAME,)``.

The traffic mirrors ours: small JSON event envelopes (~200 bytes, Vietnamese text) keyed by
ward id, on a fresh topic with 6 partitions. The messages are encoded before the clock
starts, so the figures are the client and the broker, not ``json.dumps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bench.harness import BenchContext, Figure, benchmark
from shared.kafka import aiokafka_client_kwargs

NAME = "kafka.ceiling"
RAW_PRODUCE = "kafka.raw_produce"
RAW_CONSUME = "kafka.raw_consume"

PARTITIONS = 6
FULL_N = 200_000
QUICK_N = 20_000
WARMUP_N = 2_000  # sent before the clock starts: connections, metadata, producer id
CHUNK = 2_000  # futures gathered per chunk; one chunk stays in flight while the next is sent
POOL = 4_096  # distinct pre-encoded messages, cycled (keeps memory flat whatever N is)
LINGER_MS = 5
TOPIC_READY_TIMEOUT_S = 30.0
CONSUME_TIMEOUT_S = 120.0

_WARDS = (
    "ben-nghe",
    "ben-thanh",
    "da-kao",
    "tan-dinh",
    "cau-ong-lanh",
    "nguyen-thai-binh",
    "hang-bac",
    "hang-dao",
    "trang-tien",
    "cua-nam",
    "dien-bien",
    "ngoc-ha",
    "thach-thang",
    "hai-chau",
    "thuan-phuoc",
    "vinh-ninh",
    "phu-hoi",
    "an-hoa",
    "xuan-khanh",
    "tan-an",
)
_AGENDA = (
    "Sinh hoạt chi bộ thường kỳ tháng {m}",
    "Quán triệt Nghị quyết Đại hội Đảng bộ",
    "Phát triển đảng viên quý {q}",
    "Kiến nghị của cử tri khu phố {k}",
    "Triển khai nhiệm vụ trọng tâm tháng {m}",
    "Học tập và làm theo tư tưởng Hồ Chí Minh",
)


def ward_ids(count: int = 100) -> list[str]:
    return [f"{_WARDS[i % len(_WARDS)]}-{i // len(_WARDS) + 1}" for i in range(count)]


def make_messages(count: int = POOL) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: a compact event envelope keyed by its ward id."""
    wards = ward_ids()
    start = datetime(2025, 5, 1, 19, 30, tzinfo=UTC)
    out = []
    for i in range(count):
        ward = wards[i % len(wards)]
        title = _AGENDA[i % len(_AGENDA)].format(m=i % 12 + 1, q=i % 4 + 1, k=i % 9 + 1)
        envelope = {
            "id": str(uuid.uuid4()),
            "type": "MeetingScheduled",
            "stream": f"meeting-{i:06d}",
            "seq": i % 7 + 1,
            "ward": ward,
            "at": (start + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
            "data": {"title": title},
        }
        value = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        out.append((ward.encode(), value))
    return out


async def _prepare(kwargs: dict[str, Any], topic: str, group: str, replication: int) -> None:
    """Create the topic and poll until every partition has a leader, then until the
    consumer group has a coordinator (on a fresh broker that first creates the
    __consumer_offsets topic, which is set-up, not consumption)."""
    admin = AIOKafkaAdminClient(**kwargs)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, replication)])
        deadline = time.monotonic() + TOPIC_READY_TIMEOUT_S
        while True:
            described = await admin.describe_topics([topic])
            parts = described[0].get("partitions", []) if described else []
            if (
                described
                and described[0].get("error_code", 0) == 0
                and len(parts) == PARTITIONS
                and all(p.get("leader", -1) >= 0 for p in parts)
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} has no leaders after {TOPIC_READY_TIMEOUT_S}s")
            await asyncio.sleep(0.05)
        while True:
            try:
                await admin.find_coordinator(group)
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def _delete_topic(kwargs: dict[str, Any], topic: str) -> None:
    admin = AIOKafkaAdminClient(**kwargs)
    with contextlib.suppress(Exception):  # best effort: a local stack is deleted anyway
        await admin.start()
        await admin.delete_topics([topic])
    with contextlib.suppress(Exception):
        await admin.close()


async def _produce(
    ctx: BenchContext, kwargs: dict[str, Any], topic: str, pool: list[tuple[bytes, bytes]], n: int
) -> tuple[float, float]:
    """Send ``n`` messages (after a warm-up); return (seconds, peak RSS MiB)."""
    producer = AIOKafkaProducer(**kwargs, acks="all", enable_idempotence=True, linger_ms=LINGER_MS)
    await producer.start()
    try:
        warm = [await producer.send(topic, value=v, key=k) for k, v in pool[:WARMUP_N]]
        await asyncio.gather(*warm)

        size = len(pool)
        with ctx.phase("produce", total=n) as phase:
            in_flight: list[asyncio.Future[Any]] = []
            for chunk_start in range(0, n, CHUNK):
                chunk_end = min(chunk_start + CHUNK, n)
                sent = []
                for i in range(chunk_start, chunk_end):
                    key, value = pool[i % size]
                    sent.append(await producer.send(topic, value=value, key=key))
                if in_flight:
                    await asyncio.gather(*in_flight)
                    phase.advance(len(in_flight))
                in_flight = sent
            await asyncio.gather(*in_flight)
            phase.advance(len(in_flight))
        return phase.elapsed_s, phase.peak_rss_mib
    finally:
        await producer.stop()


async def _consume(
    ctx: BenchContext, kwargs: dict[str, Any], topic: str, group: str, total: int
) -> tuple[float, float, float, int]:
    """Read the whole topic with a fresh group from the earliest offset.

    Returns (seconds, peak RSS MiB, seconds to the first record, bytes read). The clock
    starts once the client is connected, so it includes the group join and the first fetch.
    """
    consumer = AIOKafkaConsumer(
        topic,
        **kwargs,
        group_id=group,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        count = 0
        nbytes = 0
        first_at: float | None = None
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        with ctx.phase("consume", total=total) as phase:
            while count < total:
                batches = await consumer.getmany(timeout_ms=200)
                got = 0
                for records in batches.values():
                    got += len(records)
                    for record in records:
                        nbytes += len(record.value or b"")
                if got:
                    if first_at is None:
                        first_at = time.perf_counter() - phase.started
                    count += got
                    phase.advance(got)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"read {count} of {total} in {CONSUME_TIMEOUT_S}s")
        return phase.elapsed_s, phase.peak_rss_mib, first_at or 0.0, nbytes
    finally:
        await consumer.stop()


@benchmark(name=NAME, needs=("kafka",), timeout_s=240)
async def kafka_ceiling(ctx: BenchContext) -> list[Figure]:
    """Raw aiokafka produce and consume throughput: the ceilings of every Kafka figure."""
    assert ctx.kafka is not None
    kwargs = aiokafka_client_kwargs(ctx.kafka)
    n = ctx.size(FULL_N, QUICK_N)
    pool = make_messages()
    mean_bytes = sum(len(v) for _, v in pool) / len(pool)
    topic = ctx.unique("bench.kafka-ceiling")
    group = ctx.unique("bench.kafka-ceiling")

    await _prepare(kwargs, topic, group, ctx.kafka.replication_factor)
    try:
        produce_s, produce_rss = await _produce(ctx, kwargs, topic, pool, n)
        total = n + WARMUP_N
        consume_s, consume_rss, first_s, nbytes = await _consume(ctx, kwargs, topic, group, total)
    finally:
        await _delete_topic(kwargs, topic)

    common = {
        "partitions": PARTITIONS,
        "keys": len(ward_ids()),
        "mean_message_bytes": round(mean_bytes, 1),
    }
    produce_rate = n / produce_s
    consume_rate = total / consume_s
    return [
        Figure.reference(
            RAW_PRODUCE,
            produce_rate,
            "msg/s",
            peak_rss_mib=produce_rss,
            notes=(
                f"{n} msgs of ~{mean_bytes:.0f} B in {produce_s:.2f} s "
                f"({produce_rate * mean_bytes / 2**20:.1f} MiB/s); acks=all, idempotent, "
                f"linger {LINGER_MS} ms, futures gathered per {CHUNK}"
            ),
            params={
                **common,
                "messages": n,
                "warmup_messages": WARMUP_N,
                "acks": "all",
                "enable_idempotence": True,
                "linger_ms": LINGER_MS,
                "chunk": CHUNK,
                "seconds": round(produce_s, 3),
            },
        ),
        Figure.reference(
            RAW_CONSUME,
            consume_rate,
            "msg/s",
            peak_rss_mib=consume_rss,
            notes=(
                f"{total} msgs ({nbytes / 2**20:.1f} MiB) in {consume_s:.2f} s by a fresh "
                f"group from earliest; first record after {first_s * 1000:.0f} ms"
            ),
            params={
                **common,
                "messages": total,
                "seconds": round(consume_s, 3),
                "first_record_s": round(first_s, 3),
                "bytes": nbytes,
            },
        ),
    ]
