"""docs/contract.md's example works with a generic Kafka client (kcat), not our code."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from ops.stack import Stack
from tests.integration.helpers import eventually, fetch, read_topic, unique_ward, ward_auth

DOC = Path(__file__).resolve().parents[2] / "docs" / "contract.md"


def documented_example() -> dict:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- example:inbound -->\s*```json\s*(.+?)\s*```", text, re.S)
    assert block, "docs/contract.md lost its inbound example"
    return json.loads(block.group(1))


def kcat() -> str:
    path = shutil.which("kcat")
    assert path, "kcat is missing: scripts/setup.sh installs it (Debian package kcat)"
    return path


async def test_the_documented_kcat_example_schedules_a_meeting(
    running_stack: Stack, tmp_path: Path
) -> None:
    example = documented_example()
    ward = unique_ward()
    # The documented message, moved to a ward of its own so the test is independent.
    raw = json.dumps(example, ensure_ascii=False).replace(example["payload"]["ward_id"], ward)
    message = json.loads(raw)
    message["message_id"] = f"meeting-app:{uuid.uuid4()}"
    # The meeting's cell is registered first, as the contract says (not with kcat: over HTTP).
    cell = message["payload"]["cell_id"]
    async with httpx.AsyncClient(base_url=running_stack.service_url("meetings")) as client:
        registered = await client.post(
            "/v1/commands/RegisterCell",
            json={"cell_id": cell, "ward_id": ward, "name": "Chi bộ khu phố 3"},
            headers=ward_auth(running_stack, ward),
        )
    assert registered.status_code == 201, registered.text
    lines = tmp_path / "schedule.jsonl"
    lines.write_text(json.dumps(message, ensure_ascii=False) + "\n", encoding="utf-8")

    produce = await asyncio.to_thread(
        subprocess.run,
        [kcat(), "-P", "-b", running_stack.kafka_bootstrap, "-t", "chibo.commands.v1",
         "-k", ward, "-X", "partitioner=murmur2_random",
         "-H", "content-type=application/json", "-l", str(lines)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert produce.returncode == 0, produce.stderr

    async def appended() -> list | None:
        rows = await fetch(
            running_stack.database_url,
            "select payload, source from meetings.events"
            " where ward_id = $1 and event_type = 'MeetingScheduled'",
            ward,
        )
        return rows or None

    rows = await eventually(appended, what="the kcat-published command's event")

    # The documented partitioner puts the ward where aiokafka's murmur2 (our tools, the
    # Java client) puts it: every publisher's records of one ward share a partition.
    key = ward.encode()
    records = await read_topic(
        running_stack.kafka_bootstrap, "chibo.commands.v1", lambda rs: any(r.key == key for r in rs)
    )
    [record] = [r for r in records if r.key == key]
    producer = AIOKafkaProducer(bootstrap_servers=running_stack.kafka_bootstrap)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for("chibo.commands.v1"))
    finally:
        await producer.stop()
    assert record.partition == DefaultPartitioner()(key, partitions, partitions)
    payload = json.loads(rows[0]["payload"])
    assert payload["meeting_id"] == message["payload"]["meeting_id"]
    assert payload["location"] == message["payload"]["location"]
    assert rows[0]["source"] == "meeting-app"

    async def read_back_with_kcat() -> str | None:
        consume = await asyncio.to_thread(
            subprocess.run,
            [kcat(), "-C", "-b", running_stack.kafka_bootstrap, "-t", "chibo.events.v1",
             "-o", "beginning", "-e", "-q", "-f", "%k %s\n"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        mine = [
            line
            for line in consume.stdout.splitlines()
            if line.startswith(f"{ward} ") and '"event_type": "MeetingScheduled"' in line
        ]
        return mine[0] if mine else None

    line = await eventually(read_back_with_kcat, what="the event read back with kcat")
    assert (
        json.loads(line.split(" ", 1)[1])["payload"]["meeting_id"]
        == (message["payload"]["meeting_id"])
    )
