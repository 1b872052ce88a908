"""/ready and the chibo_ready gauge: what an orchestrator and an alert each see of a
service's dependencies (shared/http.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from shared import http as shared_http


async def answers() -> bool:
    return True


async def refuses() -> bool:
    return False


async def raises() -> bool:
    raise ConnectionError("gone")


async def hangs() -> bool:
    await asyncio.sleep(3600)  # a database that accepts the connection and never answers
    return True


def app_with(checks: dict, informational: dict | None = None) -> FastAPI:
    app = FastAPI()
    shared_http.add_operational_routes(app, CollectorRegistry(), checks, informational)
    return app


def ready_samples(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["check"], s.labels["required"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "chibo_ready"
    }


async def get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        return await client.get(path)


async def test_all_required_checks_answering_is_ready_and_each_reads_1() -> None:
    app = app_with({"postgres": answers}, {"kafka": refuses})
    response = await get(app, "/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"postgres": "ok"},
        "informational": {"kafka": "failing"},
    }
    metrics = await get(app, "/metrics")
    assert ready_samples(metrics.text) == {("postgres", "true"): 1.0, ("kafka", "false"): 0.0}


async def test_a_failing_raising_or_hanging_check_is_not_ready_and_reads_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shared_http, "CHECK_TIMEOUT_S", 0.05)
    app = app_with({"postgres": raises, "kafka": hangs, "relay": refuses, "cache": answers})
    response = await get(app, "/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    assert response.json()["checks"] == {
        "postgres": "failing",
        "kafka": "failing",
        "relay": "failing",
        "cache": "ok",
    }
    # The scrape runs the checks itself: the gauge is as fresh as the scrape, and a hung
    # dependency does not hang /metrics.
    metrics = await get(app, "/metrics")
    assert metrics.status_code == 200
    assert ready_samples(metrics.text) == {
        ("postgres", "true"): 0.0,
        ("kafka", "true"): 0.0,
        ("relay", "true"): 0.0,
        ("cache", "true"): 1.0,
    }
