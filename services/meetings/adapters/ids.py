"""Random (version 4) UUIDs for event and correlation ids, made many at a time.

``uuid.uuid4()`` asks the kernel for 16 random bytes per id and builds the UUID in Python:
several microseconds per id, two ids per command on the Kafka door. Here one
``os.urandom`` call fills a buffer for many ids, the version and variant bits are set as
``uuid4`` sets them, and each id is asyncpg's C ``UUID`` (a ``uuid.UUID`` subclass: equal,
hashing and printing the same). The ids are as random as ``uuid4``'s: the same source.
"""

from __future__ import annotations

import os
import uuid

from asyncpg.pgproto.pgproto import UUID as _FastUUID

_BUFFERED = 256  # ids per refill of the single-id buffer


def new_uuids(n: int) -> list[uuid.UUID]:
    """``n`` fresh version-4 UUIDs."""
    if n <= 0:
        return []
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])  # RFC 4122 variant
    data = bytes(raw)
    return [_FastUUID(data[i : i + 16]) for i in range(0, 16 * n, 16)]


_pending: list[uuid.UUID] = []


def new_uuid() -> uuid.UUID:
    """One fresh version-4 UUID, from a buffer refilled ``_BUFFERED`` at a time."""
    if not _pending:
        _pending.extend(new_uuids(_BUFFERED))
    return _pending.pop()


# A forked child must not hand out the ids its parent has buffered (and may hand out).
os.register_at_fork(after_in_child=_pending.clear)
