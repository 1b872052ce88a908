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
