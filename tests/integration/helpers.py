"""Small helpers for the integration tests: ids, commands, and reading real outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import mailbox
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from ops.stack import Stack
from shared.clock import LOCAL_TZ

T = TypeVar("T")


def ward_auth(stack: Stack, ward_id: str) -> dict[str, str]:
    """Headers of a ward official whose token is scoped to ``ward_id``."""
    token = stack.issue_token("ward_official", "ward", ward_id, f"test.{ward_id}")
    return {"Authorization": f"Bearer {token}"}


def unique_ward() -> str:
    return f"ward-{uuid.uuid4().hex[:10]}"


def _cell_bodies(ward_id: str, cells: int) -> list[dict[str, Any]]:
    return [
        {"cell_id": f"{ward_id}.to-{n:02d}", "ward_id": ward_id, "name": f"Chi bộ Tổ dân phố {n}"}
        for n in range(1, cells + 1)
    ]


async def registered_ward(stack: Stack, cells: int = 1) -> str:
    """A new ward with its cells ``to-01``... registered (the cells ``schedule_body``
    names): a ward's meetings and petitions are of its own registered cells."""
    ward = unique_ward()
    async with httpx.AsyncClient(base_url=stack.service_url("meetings")) as client:
        for body in _cell_bodies(ward, cells):
            response = await client.post(
                "/v1/commands/RegisterCell", json=body, headers=ward_auth(stack, ward)
            )
            assert response.status_code == 201, response.text
    return ward


def registered_ward_sync(stack: Stack, cells: int = 1) -> str:
    """``registered_ward`` for a test that is not a coroutine."""
    ward = unique_ward()
    with httpx.Client(base_url=stack.service_url("meetings")) as client:
        for body in _cell_bodies(ward, cells):
            response = client.post(
                "/v1/commands/RegisterCell", json=body, headers=ward_auth(stack, ward)
            )
            assert response.status_code == 201, response.text
    return ward


def schedule_body(ward_id: str, cell_no: int = 1, **overrides: Any) -> dict[str, Any]:
    cell_id = f"{ward_id}.to-{cell_no:02d}"
    start = (datetime.now(LOCAL_TZ) + timedelta(days=10)).replace(
        hour=19, minute=30, second=0, microsecond=0
    )
    return {
        "meeting_id": f"{cell_id}.m{uuid.uuid4().hex[:6]}",
        "ward_id": ward_id,
        "cell_id": cell_id,
        "kind": "regular",
        "scheduled_start": start.isoformat(),
        "agenda": ["Quán triệt nghị quyết", "Kiến nghị của cử tri về đường giao thông"],
        **overrides,
    }


def mails_to(maildir: Path, recipient: str) -> list[EmailMessage]:
    """Messages the real SMTP sink stored for ``recipient``, parsed with the modern policy."""
    if not maildir.exists():
        return []
    box = mailbox.Maildir(str(maildir), create=False)
    parsed = (
        email.message_from_bytes(box.get_bytes(k), policy=email.policy.default) for k in box.keys()
    )
    return [m for m in parsed if str(m["To"]) == recipient]


def text_of(message: EmailMessage, subtype: str = "plain") -> str:
    """The message's text/``subtype`` body."""
    body = message.get_body((subtype,))
    assert body is not None, f"no text/{subtype} part"
    return str(body.get_content())


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def own_database(stack: Stack) -> AsyncIterator[str]:
    """A new database on the stack's server, for a test that must not touch the one the
    stack's services use; dropped afterwards. Yields its URL."""
    database = f"test_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'create database "{database}"')
    try:
        yield stack.database_url.rsplit("/", 1)[0] + f"/{database}"
    finally:
        await admin.execute(f'drop database "{database}" with (force)')
        await admin.close()


async def close_pool(pool: asyncpg.Pool, timeout_s: float = 10) -> None:
    """Close a test's pool without hanging the run: a test that failed while holding a
    connection would make ``close()`` wait for it forever, past pytest-timeout."""
    try:
        await asyncio.wait_for(pool.close(), timeout=timeout_s)
    except TimeoutError:
        pool.terminate()


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"{what} not reached within {timeout_s}s (last value: {last!r})")


def inbound(body: dict[str, Any], source: str = "meeting-app", **overrides: Any) -> dict[str, Any]:
    """An upstream publisher's envelope around a ScheduleMeeting payload."""
    return {
        "message_id": str(uuid.uuid4()),
        "type": "ScheduleMeeting",
        "version": 1,
        "occurred_at": datetime.now(LOCAL_TZ).isoformat(),
        "source": source,
        "payload": body,
        **overrides,
    }


async def read_topic(
    bootstrap: str, topic: str, until: Callable[[list[Any]], bool], timeout_s: float = 30.0
) -> list[Any]:
    """Every record of ``topic`` from the start, read with a plain consumer until ``until``."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[Any] = []
    try:

        async def done() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            return until(records)

        await eventually(done, timeout_s=timeout_s, what=f"records on {topic}")
    finally:
        await consumer.stop()
    return records


@contextlib.contextmanager
def daytime(stack: Stack) -> Iterator[None]:
    """Moves the services' clock to the next 10:00 in Hà Nội for the block, so that
    notifications' quiet hours (22:00-06:00) hold nothing back; puts it back after."""
    path = stack.settings.clock_offset_file
    assert path is not None
    now = datetime.now(LOCAL_TZ)
    target = now.replace(hour=10, minute=0, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    path.write_text(str((target - now).total_seconds()))
    try:
        yield
    finally:
        path.write_text("0")


# A UnitLadder's ward by its level: a ward (phường) or a commune (xã).
WARD_NAMES = {"ward": "Đảng bộ phường Nam Ngạn", "commune": "Đảng bộ xã Thiệu Vân"}


class UnitLadder:
    """A ward in a district in a province, with a token that may act on all of it, and
    its commands sent over the meetings service's HTTP door."""

    def __init__(self, stack: Stack, ward_level: str = "ward") -> None:
        self.stack = stack
        self.ward = unique_ward()
        self.ward_level = ward_level
        self.district = f"{self.ward}-huyen"
        self.province = f"{self.ward}-tinh"
        token = stack.issue_token("province_official", "province", self.province, "test")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def send(
        self, command_type: str, body: dict[str, Any], url: str | None = None
    ) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=url or self.stack.service_url("meetings")) as c:
            response = await c.post(f"/v1/commands/{command_type}", json=body, headers=self.headers)
        assert response.status_code == 201, (command_type, response.text)
        return dict(response.json())

    async def register(self) -> None:
        for unit, parent, level, name in (
            (self.province, None, "province", "Đảng bộ tỉnh Thanh Hóa"),
            (self.district, self.province, "district", "Đảng bộ thành phố Thanh Hóa"),
            (self.ward, self.district, self.ward_level, WARD_NAMES[self.ward_level]),
        ):
            await self.send(
                "RegisterUnit",
                {"unit_id": unit, "parent_id": parent, "level": level, "name": name},
            )


async def metric_value(stack: Stack, service: str, sample: str, **labels: str) -> float | None:
    """The value of one sample on a service's /metrics (``sample`` as exposed, e.g.
    ``chibo_commands_total``), whose labels include ``labels``; the sum when several
    match, None when none does."""
    return await metric_at(stack.service_url(service), sample, **labels)


async def metric_at(base_url: str, sample: str, **labels: str) -> float | None:
    """``metric_value`` for the process at ``base_url`` (a second replica, say)."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        return await metric_from(client, sample, **labels)


async def metric_from(client: httpx.AsyncClient, sample: str, **labels: str) -> float | None:
    """``metric_value`` through a client of the service's own (an app run in process)."""
    text = (await client.get("/metrics")).text
    values = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    ]
    return sum(values) if values else None
