"""Where the operator CLI connects, and how it fails: a deployment when
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set, the local stack otherwise (whose own
database setting is CHIBO_DATABASE_URL, never DATABASE_URL). Connections give up within
seconds with `Unreachable`, naming the part and its address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import typer
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from rich.console import Console
from rich.markup import escape

from ops.stack import Stack, StackSettings, StartupError
from shared.kafka import aiokafka_client_kwargs
from shared.postgres import check_server_version
from shared.settings import KafkaSettings

T = TypeVar("T")
_KAFKA_DOWN = (KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError, RequestTimedOutError)

CONNECT_TIMEOUT_S = 5.0
KAFKA_TIMEOUT_S = 5.0


class Unreachable(RuntimeError):
    """Kafka or PostgreSQL did not answer; says which, and at what address."""

    def __init__(self, part: str, address: str, reason: str) -> None:
        super().__init__(f"{part} is unreachable at {address}: {reason}")
        self.part = part
        self.address = address


class NotFound(LookupError):
    """What was asked for does not exist (a stream, a ward's streams, a DLQ record)."""


@dataclass(frozen=True)
class Target:
    """Where the CLI connects: a deployment when KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL
    are set, the local stack (`make up`, `CHIBO_*` ports) otherwise."""

    kafka: KafkaSettings
    database_url: str

    @classmethod
    def from_env(cls) -> Target:
        stack = Stack(StackSettings())
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            kafka = KafkaSettings()
        else:
            kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
        database_url = os.environ.get("DATABASE_URL") or stack.database_url
        return cls(kafka=kafka, database_url=database_url)

    @property
    def database_address(self) -> str:
        return redact_url(self.database_url)


def target_or_exit() -> Target:
    """`Target.from_env` for a command: a local stack setting the stack refuses (a remote
    CHIBO_DATABASE_URL without CHIBO_ALLOW_REMOTE_DATABASE=1) is exit 2, with the reason."""
    try:
        return Target.from_env()
    except StartupError as exc:
        Console(stderr=True, highlight=False).print(f"[red]✗ {escape(str(exc))}[/red]")
        raise typer.Exit(code=2) from exc


def redact_url(url: str) -> str:
    """The URL without its password, fit for an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def kafka_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka client arguments with short timeouts: an operator waits seconds, not 40 s."""
    return {
        **aiokafka_client_kwargs(settings),
        "request_timeout_ms": int(KAFKA_TIMEOUT_S * 1000),
        "connections_max_idle_ms": 60_000,
        "retry_backoff_ms": 100,
    }


async def with_kafka(settings: KafkaSettings, work: Awaitable[T], timeout_s: float) -> T:
    """``work`` against Kafka, or `Unreachable` when the broker does not answer in time."""
    try:
        return await asyncio.wait_for(work, timeout_s)
    except TimeoutError as exc:
        raise Unreachable(
            "Kafka", settings.bootstrap_servers, f"no answer within {timeout_s:.0f}s"
        ) from exc
    except KafkaConnectionError as exc:
        raise Unreachable("Kafka", settings.bootstrap_servers, "no broker answered") from exc
    except _KAFKA_DOWN as exc:
        raise Unreachable(
            "Kafka", settings.bootstrap_servers, str(exc) or type(exc).__name__
        ) from exc


async def probe_kafka(settings: KafkaSettings) -> None:
    """Fail fast with `Unreachable` unless the broker answers a metadata request."""

    async def ask() -> None:
        admin = AIOKafkaAdminClient(**kafka_kwargs(settings))
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    await with_kafka(settings, ask(), KAFKA_TIMEOUT_S)


@asynccontextmanager
async def kafka_clients(
    settings: KafkaSettings,
) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
    """An admin client and a group-less consumer (nothing joined, nothing committed)."""
    kwargs = kafka_kwargs(settings)
    admin = AIOKafkaAdminClient(**kwargs)
    try:
        await admin.start()
        consumer = AIOKafkaConsumer(
            **kwargs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        try:
            await consumer.start()
            await asyncio.sleep(0)  # let its tasks start: stopping an unstarted one raises
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        try:
            yield admin, consumer
        finally:
            await consumer.stop()
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@asynccontextmanager
async def connect(
    database_url: str, application_name: str = "chibo-cli"
) -> AsyncIterator[asyncpg.Connection]:
    """A connection, or `Unreachable` within a few seconds. ``application_name`` names it
    in pg_stat_activity; `UnsupportedPostgres` on a server older than the services need
    (none of them runs there)."""
    try:
        conn = await asyncpg.connect(
            database_url,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": application_name},
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        reason = str(exc) or type(exc).__name__
        raise Unreachable("PostgreSQL", redact_url(database_url), reason) from exc
    try:
        await check_server_version(conn)
        yield conn
    finally:
        await conn.close()
