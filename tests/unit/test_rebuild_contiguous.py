"""The rebuild's preparer applies each stream contiguously, as the live consumer's
``claim_batch`` does: an event it cannot read stops its stream before it, and the
stream's later events wait for the redriven ones further on in the topic."""

from __future__ import annotations

import json
from typing import Any

from services.reports.service_layer import rebuild
from tests.unit.test_event_reading import PAYLOAD, value

RESCHEDULED = {
    "meeting_id": PAYLOAD["meeting_id"],
    "ward_id": PAYLOAD["ward_id"],
    "cell_id": PAYLOAD["cell_id"],
    "scheduled_start": "2026-12-05T19:30:00+07:00",
    "reason": "Trùng lịch họp của phường",
}


def rescheduled(version: int, **overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "event_type": "MeetingRescheduled",
        "schema_version": 1,
        "stream_version": version,
        "event_id": f"00000000-0000-4000-8000-{version:012d}",
        "payload": RESCHEDULED,
    }
    return value(**{**fields, **overrides})


def versions_written(statements: list[tuple[str, str]]) -> dict[str, int]:
    rows = [json.loads(p) for sql, p in statements if sql == rebuild._VERSIONS]
    return {stream: version for batch in rows for stream, version in batch}


def test_an_unreadable_event_stops_its_stream_until_it_comes_again_readable() -> None:
    rebuild._start()
    other = value(stream_id="meeting-other", event_id="99999999-9999-4999-8999-999999999999")

    applied, skipped, statements, _ = rebuild._prepare(
        [value(), rescheduled(2, schema_version=9), rescheduled(3), other, rescheduled(4)]
    )

    assert (applied, skipped) == (2, 3)
    assert versions_written(statements) == {
        "meeting-nam-ngan.to-01.2026-12": 1,
        "meeting-other": 1,
    }

    # The fixed event, then the redriven ones (the unreadable copy too), later in the topic.
    applied, skipped, statements, _ = rebuild._prepare(
        [rescheduled(2), rescheduled(2, schema_version=9), rescheduled(3), rescheduled(4)]
    )

    assert (applied, skipped) == (3, 1)
    assert versions_written(statements) == {"meeting-nam-ngan.to-01.2026-12": 4}


def test_a_stream_whose_first_event_is_unreadable_is_recorded_before_it() -> None:
    rebuild._start()

    applied, skipped, statements, _ = rebuild._prepare(
        [value(schema_version=9), rescheduled(2), value(stream_id="s-new", event_type="New")]
    )

    assert (applied, skipped) == (0, 3)
    # The unknown type is claimed (its stream goes on), though not applied.
    assert versions_written(statements) == {"meeting-nam-ngan.to-01.2026-12": 0, "s-new": 1}


def test_redriven_copies_in_the_batch_of_their_originals_are_applied_in_their_place() -> None:
    """Live, v3 was parked behind the unreadable v2 and both came back, readable, in a
    later batch. A rebuild batch can hold the originals and the copies: it takes the
    stream in the topic's order, as live, so the parked v3 stays parked and its copy is
    applied. (``claim_batch`` takes a batch's events of a stream in version order: it
    would apply the original v3, in the place where live had parked it.)"""
    rebuild._start()
    rebuild._prepare([value()])

    applied, skipped, statements, _ = rebuild._prepare(
        [rescheduled(2, schema_version=9), rescheduled(3), rescheduled(2), rescheduled(3)]
    )

    assert (applied, skipped) == (2, 2)
    assert versions_written(statements) == {"meeting-nam-ngan.to-01.2026-12": 3}
