"""The DLQ commands' pure parts: positions, selection, re-drive headers, usage errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ops.cli import app
from ops.dlq import DlqRecord, parse_position, redrive_headers, select
from ops.target import redact_url


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
