"""`chibo generate` writes a month's commands and expected figures."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ops.cli import app


def test_generate_writes_commands_and_expected_figures(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["generate", "--wards", "2", "--cells", "6", "--month", "2026-10", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "commands.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines and json.loads(lines[0])["source"] == "chibo-demo"
    expected = json.loads((tmp_path / "expected.json").read_text(encoding="utf-8"))
    assert expected["month"] == "2026-10" and len(expected["wards"]) == 2
