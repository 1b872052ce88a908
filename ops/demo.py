"""The demo: a generated district's month (generator/) published through the Kafka
inbound door as an upstream system would, then read back from the services."""

from __future__ import annotations

import json
import mailbox
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


def report_counts(client: httpx.Client, reports_url: str) -> dict[str, int]:
    wards = client.get(f"{reports_url}/v1/wards").json()["wards"]
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
