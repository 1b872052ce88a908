"""The local broker is set up as the design requires: idempotent producers and
transactions work on the single KRaft node."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ops.stack import Stack
from tests.integration.helpers import eventually


async def test_transactions_and_idempotence_work_on_the_single_node(stack: Stack) -> None:
    topic = f"test-tx-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap,
        transactional_id=f"test-{uuid.uuid4()}",
        enable_idempotence=True,
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed-1", key=b"w")
            await producer.send(topic, b"committed-2", key=b"w")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted", key=b"w")
        await producer.abort_transaction()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        group_id=None,
    )
    await consumer.start()
    values: list[bytes] = []
    try:

        async def both_committed_read() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                values.extend(r.value for r in records)
            return len(values) >= 2

        await eventually(both_committed_read, what="committed transactional records")
        # Read on once more: the aborted record must never show up.
        for records in (await consumer.getmany(timeout_ms=500)).values():
            values.extend(r.value for r in records)
    finally:
        await consumer.stop()
    assert values == [b"committed-1", b"committed-2"]
