"""``json_rows`` and ``rows_of`` against the real PostgreSQL: every value the projections
and the consumers send comes back as the same value of its column's type."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum

import asyncpg

from ops.stack import Stack
from shared.postgres import json_rows, rows_of

HANOI = timezone(timedelta(hours=7))


class Kind(StrEnum):
    REGULAR = "regular"


async def test_rows_come_back_as_the_values_sent(stack: Stack) -> None:
    instant = datetime(2026, 10, 5, 19, 30, 0, 123456, tzinfo=HANOI)
    rows = [
        (
            'Chi bộ "Khu phố 3" \\ tổ 1',  # quotes, a backslash and diacritics
            7,
            True,
            instant,
            datetime(2026, 10, 5, 12, 30),  # naive: UTC, as asyncpg takes it
            date(2026, 10, 10),
            ["Một", "Hai"],
            Kind.REGULAR,
        ),
        ("b", -1, False, None, None, None, None, None),
    ]
    conn = await asyncpg.connect(stack.database_url)
    try:
        got = await conn.fetch(
            "select * from "
            + rows_of(
                "name text, n int, ok bool, at timestamptz, naive timestamptz, on_day date,"
                " items jsonb, kind text"
            )
            + " u order by n desc",
            json_rows(rows),
        )
    finally:
        await conn.close()
    first, second = (dict(r) for r in got)
    assert first == {
        "name": 'Chi bộ "Khu phố 3" \\ tổ 1',
        "n": 7,
        "ok": True,
        "at": instant,
        "naive": datetime(2026, 10, 5, 12, 30, tzinfo=UTC),
        "on_day": date(2026, 10, 10),
        "items": '["Một", "Hai"]',
        "kind": "regular",
    }
    # JSON null is SQL null in every column, the jsonb one too (not the JSON 'null').
    assert second == {
        "name": "b",
        "n": -1,
        "ok": False,
        "at": None,
        "naive": None,
        "on_day": None,
        "items": None,
        "kind": None,
    }


async def test_any_text_comes_back_the_same_as_text_and_in_a_list(stack: Stack) -> None:
    # PostgreSQL holds no NUL in text or jsonb, so "\x00" is left out.
    texts = ['say "hi"', "back\\slash", "line\nbreak\ttab", "\x01\x1f", "\u2028\u2029", "😀", ""]
    conn = await asyncpg.connect(stack.database_url)
    try:
        got = await conn.fetch(
            "select t, l from " + rows_of("i int, t text, l jsonb") + " u order by i",
            json_rows([(i, t, [t, "Sinh hoạt chi bộ thường kỳ"]) for i, t in enumerate(texts)]),
        )
    finally:
        await conn.close()
    assert [r["t"] for r in got] == texts
    assert [json.loads(r["l"]) for r in got] == [[t, "Sinh hoạt chi bộ thường kỳ"] for t in texts]
