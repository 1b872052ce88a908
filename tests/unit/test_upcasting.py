"""Old event versions load as the current one."""

from __future__ import annotations

import pytest

from shared.contract import MeetingScheduled
from shared.contract.events import load_event
from shared.contract.upcasting import upcast

V1_PAYLOAD = {
    "meeting_id": "nam-ngan.to-01.2026-11",
    "ward_id": "nam-ngan",
    "cell_id": "nam-ngan.to-01",
    "kind": "regular",
    "scheduled_start": "2026-11-03T19:30:00+07:00",
    "agenda": ["Quán triệt nghị quyết"],
}


def test_a_v1_meeting_scheduled_loads_as_v2_without_a_location() -> None:
    event = load_event("MeetingScheduled", 1, dict(V1_PAYLOAD))
    assert isinstance(event, MeetingScheduled)
    assert event.schema_version == 2
    assert event.location is None
    assert event.agenda == ["Quán triệt nghị quyết"]


def test_current_version_is_not_touched() -> None:
    payload = {**V1_PAYLOAD, "location": "Nhà văn hóa tổ dân phố 1"}
    assert upcast("MeetingScheduled", 2, payload, 2) == payload


def test_a_version_newer_than_the_reader_is_refused() -> None:
    with pytest.raises(LookupError):
        upcast("MeetingScheduled", 3, dict(V1_PAYLOAD), 2)
