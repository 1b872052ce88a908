"""The DLQ commands' pure parts: positions, selection, re-drive headers, usage errors, and
the warnings that say what a redrive will do, as the runbooks do."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ops import dlq as dlq_data
from ops.cli import app
from ops.dlq import (
    FIX_FIRST,
    SAME_CHECK_AGAIN,
    STREAM_GAP,
    DlqListing,
    DlqRecord,
    parse_position,
    redrive_headers,
    redrive_warnings,
    select,
    whole_values,
)
from ops.target import NotFound, redact_url
from shared.settings import KafkaSettings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def record(offset: int, reason: str, **headers: str) -> DlqRecord:
    return DlqRecord(
        topic="chibo.commands.dlq.v1",
        partition=2,
        offset=offset,
        timestamp_ms=1_700_000_000_000 + offset,
        key=b"nam-ngan",
        value=b'{"message_id": "m"}',
        headers=(
            ("dlq_reason", reason.encode()),
            ("dlq_source", f"chibo.commands.v1/4/{100 + offset}".encode()),
            *((k, v.encode()) for k, v in headers.items()),
        ),
    )


def test_parse_position() -> None:
    assert parse_position(" chibo.commands.dlq.v1/02/7 ") == "chibo.commands.dlq.v1/2/7"
    assert parse_position("3/41", dlq="chibo.events.dlq.v1") == "chibo.events.dlq.v1/3/41"
    for bad in ("chibo.commands.dlq.v1", "t/x/1", "t/1", "/1/2", "t/1/-2", "3/41"):
        with pytest.raises(ValueError):
            parse_position(bad)


def test_select_by_reason_and_by_either_position() -> None:
    records = [record(0, "malformed_envelope"), record(1, "unauthorised_source")]
    assert select(records) == records
    assert select(records, reasons=["unauthorised_source"]) == [records[1]]
    assert select(records, positions=["chibo.commands.dlq.v1/2/0"]) == [records[0]]
    assert select(records, positions=["chibo.commands.v1/4/101"]) == [records[1]]  # dlq_source
    assert (
        select(records, reasons=["malformed_envelope"], positions=["chibo.commands.v1/4/101"]) == []
    )


def test_redrive_headers_drop_the_dlq_ones_and_name_the_dlq_record() -> None:
    r = record(5, "unauthorised_source", **{"content-type": "application/json"})
    headers = dict(redrive_headers(r))
    assert headers == {
        "content-type": b"application/json",
        "redriven_from": b"chibo.commands.dlq.v1/2/5",
    }


def test_record_fields_fall_back_when_headers_are_missing() -> None:
    bare = DlqRecord("chibo.events.dlq.v1", 0, 3, 1_700_000_000_000, None, b"", ())
    assert bare.reason == "(none)"
    assert bare.source is None
    assert bare.dead_lettered_at.year == 2023
    assert bare.as_json()["key"] is None


def test_a_copy_cut_short_is_known_by_its_header_and_only_it_needs_its_original() -> None:
    cut = record(0, "malformed_envelope", dlq_truncated="true", dlq_original_bytes="1048000")
    whole = record(1, "malformed_envelope")
    assert cut.cut and not whole.cut
    # No cut record: nothing to read, so no broker is asked (none answers at this address).
    nowhere = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    assert asyncio.run(whole_values(nowhere, [whole])) == {}


def test_a_copy_cut_short_without_a_source_is_refused_before_any_read() -> None:
    bare = DlqRecord(
        "chibo.events.dlq.v1", 0, 3, 1_700_000_000_000, None, b"", (("dlq_truncated", b"true"),)
    )
    nowhere = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(NotFound, match=r"not at its dlq_source: chibo.events.dlq.v1/0/3;"):
        asyncio.run(whole_values(nowhere, [bare]))


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("postgresql://u@h:5/db") == "postgresql://u@h:5/db"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dlq", "redrive", "--yes"], "say which records"),
        (
            ["dlq", "redrive", "--source", "oops"],
            "is not TOPIC/PARTITION/OFFSET or PARTITION/OFFSET",
        ),
    ],
)
def test_redrive_usage_errors_exit_2_before_touching_kafka(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args, env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.exit_code == 2
    assert message in result.output


def test_unknown_dlq_topic_is_bad_usage() -> None:
    assert CliRunner().invoke(app, ["dlq", "list", "--topic", "nope"]).exit_code == 2


# --- what a redrive does, per DLQ, as the runbooks say --------------------------------------


def event_record(offset: int, reason: str, stream: str, consumer: str = "reports") -> DlqRecord:
    envelope = {"stream_id": stream, "stream_version": offset + 1, "event_type": "X"}
    return DlqRecord(
        topic="chibo.events.dlq.v1",
        partition=1,
        offset=offset,
        timestamp_ms=1_700_000_000_000 + offset,
        key=b"nam-ngan",
        value=json.dumps(envelope).encode(),
        headers=(
            ("dlq_reason", reason.encode()),
            ("dlq_consumer", consumer.encode()),
            ("dlq_source", f"chibo.events.v1/1/{100 + offset}".encode()),
        ),
    )


def test_an_event_with_an_invalid_payload_comes_back_once_the_fix_is_deployed() -> None:
    """A contract bug on the read side: redrive is the way back (docs/operations.md), not a
    record that "will be dead-lettered again" whatever is done."""
    parked = [
        event_record(0, "invalid_payload", "meeting-a"),
        event_record(1, STREAM_GAP, "meeting-a"),
    ]
    warnings = redrive_warnings("events", parked)
    assert warnings == [
        "1 invalid_payload record(s): deploy the contract fix first; a record redriven before"
        " that is dead-lettered again, and parks its stream again."
    ]


def test_a_command_with_an_invalid_payload_is_refused_again() -> None:
    (warning,) = redrive_warnings(
        "commands", [record(0, "invalid_payload"), record(1, "rejected_x")]
    )
    assert warning.startswith("1 record(s) meet the same check again")
    assert "invalid_payload 1" in warning and "new message_id" in warning
    (warning,) = redrive_warnings("commands", [record(0, "unauthorised_source")])
    assert "allow-list the source" in warning


def test_a_malformed_event_envelope_has_no_way_back() -> None:
    (warning,) = redrive_warnings("events", [event_record(0, "malformed_envelope", "x")])
    assert "meet the same check again" in warning and "not written by our relay" in warning


def test_stream_gap_records_without_their_cause_are_pointed_out() -> None:
    records = [
        event_record(0, "newer_schema_version", "meeting-a"),
        event_record(1, STREAM_GAP, "meeting-a"),
        event_record(2, STREAM_GAP, "meeting-b"),  # its cause is not selected
        event_record(3, STREAM_GAP, "meeting-a", consumer="notifications"),  # nor this one's
    ]
    warnings = redrive_warnings("events", records)
    assert warnings[0].startswith("1 newer_schema_version record(s): upgrade the consumer first")
    assert warnings[1].startswith(f"2 {STREAM_GAP} record(s) without the event their stream")
    assert len(warnings) == 2
    assert redrive_warnings("events", select(records, reasons=[STREAM_GAP])) == [
        warnings[1].replace("2 ", "3 ", 1)
    ]


def _doc_table_reasons(text: str) -> dict[str, str]:
    """A Markdown table's rows by their first cell's code, the header row left out."""
    rows = re.finditer(r"^\s*\| `([a-z_<>]+)` \|.*$", text, re.M)
    return {m.group(1): m.group(0) for m in rows if m.group(1) != "dlq_reason"}


def test_the_warnings_cover_the_runbooks_reasons() -> None:
    """Every reason the runbooks list is classified, and a redrive is called futile only
    for reasons the runbooks fix elsewhere than in a redrive."""
    operations = (DOCS / "operations.md").read_text(encoding="utf-8")
    events_part = operations[
        operations.index("- Events (`.venv/bin/chibo dlq list --topic events`)") :
    ]
    events = _doc_table_reasons(events_part[: events_part.index("\n\n  Each stream")])
    assert set(events) == SAME_CHECK_AGAIN["events"] | set(FIX_FIRST["events"]) | {STREAM_GAP}
    for reason, fix in FIX_FIRST["events"].items():
        assert fix in events[reason], f"docs/operations.md: {reason} should say {fix!r}"
    contract = (DOCS / "contract.md").read_text(encoding="utf-8")
    commands = _doc_table_reasons(contract[contract.index("## Rejections") :])
    assert SAME_CHECK_AGAIN["commands"] | set(FIX_FIRST["commands"]) <= set(commands)


def test_redrive_dry_run_and_list_print_the_runbooks_advice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [
        event_record(0, "invalid_payload", "meeting-a"),
        event_record(1, STREAM_GAP, "meeting-a"),
    ]

    async def read(settings: Any, topic: str, **_: Any) -> DlqListing:
        return DlqListing(topic, records)

    monkeypatch.setattr(dlq_data, "read_dlq", read)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "DATABASE_URL": "postgresql://x@h/db",
        "COLUMNS": "300",
    }
    result = CliRunner().invoke(
        app, ["dlq", "redrive", "--topic", "events", "--all", "--dry-run"], env=env
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "deploy the contract fix first" in output
    assert "will be dead-lettered again" not in output
    assert "dry run: 2 record(s) would be re-sent to chibo.events.v1" in output
    listed = CliRunner().invoke(app, ["dlq", "list", "--topic", "events"], env=env)
    assert listed.exit_code == 0, listed.output
    output = " ".join(listed.output.split())
    assert "deploy the contract fix first" in output
    assert "Fix the cause first (docs/operations.md, DeadLetterGrowing)" in output
