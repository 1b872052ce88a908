"""Test wiring. Integration tests share one real stack (Kafka, PostgreSQL, SMTP sink and
the three services as real processes) on free ports in a temporary folder, started on
first use. Unit tests never start it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.stack import SERVICES, Stack, StackSettings, free_port

# A deployment's addresses (the CLI reads them to act on that deployment) and the local
# stack's own database settings: a shell that still has one exported must not point the
# tests, their CLI calls or the processes they start at it.
FOREIGN_TARGETS = (
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "CHIBO_DATABASE_URL",
    "CHIBO_ALLOW_REMOTE_DATABASE",
)


def pytest_configure(config: pytest.Config) -> None:
    for name in FOREIGN_TARGETS:
        os.environ.pop(name, None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    settings = StackSettings(
        root=root,
        clock_offset_file=root / "clock-offset",
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        postgres_port=free_port(),
        smtp_port=free_port(),
        meetings_port=free_port(),
        reports_port=free_port(),
        notifications_port=free_port(),
        database_url=None,  # always a throw-away embedded PostgreSQL of its own
    )
    s = Stack(settings)
    try:
        s.up()
        yield s
    finally:
        s.down()


@pytest.fixture()
def running_stack(stack: Stack) -> Stack:
    """The shared stack, with any part a previous test stopped started again."""
    if not stack.is_running("kafka"):
        stack.start_kafka()
    for name in SERVICES:
        if not stack.is_running(name):
            stack.start_service(name)
    return stack
