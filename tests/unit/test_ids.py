"""The meetings service's own version-4 UUIDs: what uuid.uuid4() makes, many at a time."""

from __future__ import annotations

import uuid

from services.meetings.adapters.ids import new_uuid, new_uuids


def test_new_uuids_are_distinct_random_version_4_uuids() -> None:
    ids = new_uuids(1000) + [new_uuid() for _ in range(1000)]
    assert len(set(ids)) == 2000
    for u in ids:
        assert isinstance(u, uuid.UUID)
        assert u.version == 4 and u.variant == uuid.RFC_4122
        assert uuid.UUID(str(u)) == u and hash(uuid.UUID(str(u))) == hash(u)
    assert new_uuids(0) == []
