"""One command followed through all three services' structured logs by its correlation
id, with causation linking each step, and no personal data on the way."""

from __future__ import annotations

import json
import uuid

import httpx

from ops.stack import Stack
from tests.integration.helpers import (
    daytime,
    eventually,
    registered_ward,
    schedule_body,
    ward_auth,
)


def log_lines(stack: Stack, service: str) -> list[dict]:
    lines = []
    for raw in stack.log_path(service).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue  # a line that is not JSON (a crash dump) is not a trail
    return lines


def applied(stack: Stack, service: str, correlation: str) -> list[dict]:
    """The service's trail entries for a correlation id: an ``event.applied`` line (a
    batch of one), or an event of an ``events.batch_applied`` line, whose event ids and
    correlation ids are in the same order."""
    found = []
    for line in log_lines(stack, service):
        if line.get("event") == "event.applied" and line.get("correlation_id") == correlation:
            found.append(line)
        elif line.get("event") == "events.batch_applied":
            ids, correlations = line["event_ids"], line["correlation_ids"]
            assert len(ids) == len(correlations) == line["events"]
            found.extend(
                {"event_id": event_id, "correlation_id": correlation}
                for event_id, c in zip(ids, correlations, strict=True)
                if c == correlation
            )
    return found


async def test_a_command_is_traceable_through_every_service(running_stack: Stack) -> None:
    with daytime(running_stack):  # quiet hours would hold the notice back
        ward = await registered_ward(running_stack)
        correlation = str(uuid.uuid4())
        async with httpx.AsyncClient(base_url=running_stack.service_url("meetings")) as client:
            response = await client.post(
                "/v1/meetings",
                json=schedule_body(ward),
                headers={**ward_auth(running_stack, ward), "X-Correlation-Id": correlation},
            )
        assert response.status_code == 201
        event_id = response.json()["event_ids"][0]

        async def traced() -> dict | None:
            found = {
                "meetings": [
                    line for line in log_lines(running_stack, "meetings")
                    if line.get("event") == "command.handled"
                    and line.get("correlation_id") == correlation
                ],
                "reports": applied(running_stack, "reports", correlation),
                "notifications": applied(running_stack, "notifications", correlation),
                "sent": [
                    line for line in log_lines(running_stack, "notifications")
                    if line.get("event") == "notice.sent" and line.get("causation_id") == event_id
                ],
            }  # fmt: skip
            return found if all(found.values()) else None

        found = await eventually(traced, what="the command's trail in all three logs")
        assert found["meetings"][0]["event_ids"] == [event_id]
        assert found["reports"][0]["event_id"] == event_id
        assert found["notifications"][0]["event_id"] == event_id
        for service in ("meetings", "reports", "notifications"):
            text = running_stack.log_path(service).read_text(encoding="utf-8", errors="replace")
            assert f"chi-bo.{ward}" not in text  # recipients' addresses are never logged
