"""Writes the report's JSON Schema (docs/report.schema.json); ``--check`` fails on drift.

python -m services.reports.entrypoints.schema [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from services.reports.domain.report import RollupReport, WardReport

TARGET = Path(__file__).resolve().parents[3] / "docs" / "report.schema.json"


def schema() -> dict[str, Any]:
    document = TypeAdapter(WardReport | RollupReport).json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://chibo.local/schemas/report.schema.json",
        "title": "Chibo monthly report (ward: chibo-ward-report/1, roll-up: chibo-rollup-report/1)",
        **document,
    }


def main(argv: list[str]) -> int:
    text = json.dumps(schema(), ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is out of date: run python -m services.reports.entrypoints.schema")
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
