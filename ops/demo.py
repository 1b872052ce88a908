"""The demo: a generated district's month (generator/) published through the Kafka
inbound door as an upstream system would, then read back from the services."""

from __future__ import annotations

import json
import mailbox
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from generator.build import Generated, generate
from generator.model import GeneratorConfig

SEED = 2026


def generate_month(year: int, month: int, out: Path) -> Generated:
    """The district of the source articles' scale (34 wards, 311 cells), one month,
    written to ``out`` as commands.jsonl and expected.json."""
    generated = generate(GeneratorConfig(SEED), year, month)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "commands.jsonl").open("w", encoding="utf-8") as f:
        for planned in generated.commands:
            f.write(json.dumps(planned.envelope_json(), ensure_ascii=False) + "\n")
    (out / "expected.json").write_text(
        json.dumps(generated.expected, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return generated


def meetings_scheduled(ward: dict[str, Any]) -> int:
    return int(ward["regular_meetings"]["scheduled"] + ward["thematic_meetings"]["scheduled"])


def report_counts(client: httpx.Client, reports_url: str, token: str) -> dict[str, int]:
    answer = client.get(f"{reports_url}/v1/wards", headers={"Authorization": f"Bearer {token}"})
    wards = answer.raise_for_status().json()["wards"]
    return {w["ward_id"]: w["meetings_scheduled"] for w in wards}


def delivered_recipients(maildir_path: str) -> list[str]:
    if not Path(maildir_path).exists():
        return []
    return [str(m["To"]) for m in mailbox.Maildir(maildir_path, create=False)]


# The figures the generator computes on its own; the report has more.
FIGURE_KEYS = (
    "cells",
    "members",
    "regular_meetings",
    "thematic_meetings",
    "attendance",
    "resolutions",
    "petitions",
)


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from ``expected``: keys only ``actual`` has are figures
    the generator does not compute; lists compare as multisets."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        return [
            d
            for key, value in expected.items()
            for d in (
                differences(value, actual[key], f"{path}.{key}")
                if key in actual
                else [f"{path}.{key}: missing"]
            )
        ]
    if isinstance(expected, list):

        def canon(xs: list[Any]) -> list[str]:
            return sorted(json.dumps(x, sort_keys=True, ensure_ascii=False) for x in xs)

        return [] if canon(expected) == canon(actual) else [f"{path}: {expected} != {actual}"]
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


def report_differences(expected: dict[str, Any], rollup: dict[str, Any]) -> list[str]:
    """The district roll-up and each ward in it against the generator's figures."""
    diffs = differences(
        {k: expected["district"][k] for k in FIGURE_KEYS}, rollup["figures"], "district"
    )
    wards = {w["unit"]["unit_id"]: w["figures"] for w in rollup["wards"]}
    for ward in expected["wards"]:
        want = {k: ward[k] for k in FIGURE_KEYS}
        diffs += differences(want, wards.get(ward["ward_id"], {}), ward["ward_id"])
    return diffs


# Notices the demo's month makes. Its meetings are in the past when it is published, so
# their notices and reminders are suppressed as stale (docs/notifications.md); the
# petitions' notices go to the officials of their cell (raised, resolved, reopened) and,
# once sent up, to the ward's secretary and deputy (escalated).
PETITION_TRIGGERS = (
    "petition_raised",
    "petition_resolved",
    "petition_reopened",
    "petition_escalated",
)


def expected_notices(generated: Generated) -> int:
    from generator.commands import ward_officials
    from shared.contract.commands import (
        EscalatePetition,
        RaisePetition,
        ReopenPetition,
        ResolvePetition,
    )

    officials: dict[str, set[str]] = {}
    for cell in generated.district.cells:
        people = {m.member_id for m in cell.members if m.role in ("secretary", "deputy")}
        officials[cell.cell_id] = people | {cell.in_charge[0]}
    ward_heads = {w.unit_id: len(ward_officials(w)) for w in generated.district.wards}
    cell_of: dict[str, str] = {}
    escalated: Counter[str] = Counter()
    total = 0
    for planned in generated.commands:
        command = planned.command
        if isinstance(command, RaisePetition):
            cell_of[command.petition_id] = command.cell_id
            total += len(officials[command.cell_id])
        elif isinstance(command, ResolvePetition | ReopenPetition):
            total += len(officials[cell_of[command.petition_id]])
        elif isinstance(command, EscalatePetition):
            # To the ward the first time; above it the generator appoints no one.
            escalated[command.petition_id] += 1
            if escalated[command.petition_id] == 1:
                total += ward_heads[command.ward_id]
    return total


def notice_counts(database_url: str, prefix: str) -> dict[str, int]:
    """The demo's petition notices in the delivery log, by status ("held" = waiting for the
    end of quiet hours)."""
    import asyncio

    import asyncpg

    async def read() -> dict[str, int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "select case when status = 'pending' and next_attempt_at > now() then 'held'"
                " else status end as status, count(*) as n from notifications.deliveries"
                " where trigger = any($1) and recipient like $2 and channel = 'email'"
                " group by 1",
                list(PETITION_TRIGGERS),
                f"{prefix}%",
            )
        except asyncpg.UndefinedTableError:
            return {}
        finally:
            await conn.close()
        return {r["status"]: int(r["n"]) for r in rows}

    return asyncio.run(read())
