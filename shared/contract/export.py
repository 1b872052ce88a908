"""Generate the published contract documents from the models.

    python -m shared.contract.export          # (re)write shared/contract/schemas/
    python -m shared.contract.export --check  # write nothing; exit 1 if the files are stale

Everything is derived from the registries (``COMMAND_TYPES``, ``EVENT_TYPES``) and the
envelope models, so a new command or event type appears after a regeneration with no
change here. The directory is owned by this generator: files it no longer produces are
removed on write and reported as extra by ``--check``.

The AsyncAPI document is built with FastStream's own specification support from a
documentation-only broker that is never started, so nothing connects to Kafka.
"""

# No `from __future__ import annotations`: FastStream reads the handler's annotations at runtime.
import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from shared.contract.commands import COMMAND_TYPES
from shared.contract.envelope import EventEnvelope
from shared.contract.events import EVENT_TYPES
from shared.contract.inbound import InboundCommand
from shared.settings import KafkaSettings

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
BASE_ID = "https://chibo.local/schemas/"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_VERSION = "3.0.0"
CONTRACT_VERSION = "1.0.0"
REGENERATE = "python -m shared.contract.export"


def _topic(name: str) -> str:
    """A topic's default name. Env overrides are per deployment, not part of the contract."""
    default = KafkaSettings.model_fields[name].default
    assert isinstance(default, str)
    return default


def command_schema_path(command_type: str, version: int) -> str:
    return f"commands/{command_type}.v{version}.json"


def event_schema_path(event_type: str, version: int) -> str:
    return f"events/{event_type}.v{version}.json"


def _json_schema(model: type[BaseModel], path: str, title: str) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": BASE_ID + path,
        **schema,
        "title": title,
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema per model, by path relative to the schemas directory."""
    docs: dict[str, dict[str, Any]] = {}
    for command_type, command in sorted(COMMAND_TYPES.items()):
        path = command_schema_path(command_type, command.schema_version)
        schema = _json_schema(command, path, f"{command_type} (command, v{command.schema_version})")
        schema["x-command-type"] = command_type
        schema["x-schema-version"] = command.schema_version
        docs[path] = schema
    for event_type, event in sorted(EVENT_TYPES.items()):
        path = event_schema_path(event_type, event.schema_version)
        schema = _json_schema(event, path, f"{event_type} (event payload, v{event.schema_version})")
        schema["x-event-type"] = event_type
        schema["x-schema-version"] = event.schema_version
        docs[path] = schema
    docs["EventEnvelope.json"] = _json_schema(
        EventEnvelope, "EventEnvelope.json", f"EventEnvelope (on {_topic('events_topic')})"
    )
    docs["InboundCommand.json"] = _json_schema(
        InboundCommand, "InboundCommand.json", f"InboundCommand (on {_topic('commands_topic')})"
    )
    return docs


_DLQ_HEADERS = (
    "Value: the original record's bytes, unchanged unless the copy is marked "
    "`dlq_truncated`. Headers: "
    "`dlq_reason` (machine-readable code), `dlq_detail` (human-readable text), "
    "`dlq_source` (`topic/partition/offset` of the original record), "
    "`dlq_at` (ISO 8601 UTC time of dead-lettering), "
    "`dlq_truncated` (`true`) and `dlq_original_bytes` (only on a copy cut short: the "
    "original was over 900,000 bytes, and the value holds its first 900,000, or nothing "
    "if the DLQ topic refused even that; the whole record is at `dlq_source`)"
)


def _commands_description() -> str:
    known = ", ".join(
        f"`{name}` v{cls.schema_version} ({command_schema_path(name, cls.schema_version)})"
        for name, cls in sorted(COMMAND_TYPES.items())
    )
    return (
        "Commands from upstream systems, each in an InboundCommand envelope (JSON, "
        "`content-type: application/json`). Record key: the ward id (the payload's "
        "`ward_id`), so one ward's commands stay in order. `message_id` is the "
        "idempotency key, per `source`: re-sending a message has no second effect. "
        "`source` must be on the meetings service's allow-list "
        "(`INBOUND_ALLOWED_SOURCES`). `payload` is the command named by `type`, at schema "
        f"`version`; the current versions are: {known}. Anything that cannot be carried "
        f"out goes to `{_topic('dlq_topic')}`."
    )


def _events_description() -> str:
    known = ", ".join(
        f"`{name}` v{cls.schema_version} ({event_schema_path(name, cls.schema_version)})"
        for name, cls in sorted(EVENT_TYPES.items())
    )
    return (
        "Every recorded domain event, in an EventEnvelope (JSON). Record key: the ward id, "
        "so one ward's events stay in order. Headers `event_type`, `event_id` and "
        "`schema_version` repeat the envelope's fields. Delivery is at least once: a "
        "consumer drops a record whose (`stream_id`, `stream_version`) it has already "
        "applied. `payload` is the event named by `event_type` at `schema_version`; older "
        "versions are upcast by the reader, and a reader ignores types it does not know. "
        f"Current versions: {known}."
    )


def _commands_dlq_description() -> str:
    return (
        f"Commands from `{_topic('commands_topic')}` that were not carried out; the records "
        f"after one keep flowing. Key: the original key. {_DLQ_HEADERS}, and "
        "`dlq_message_id` (the command's `message_id`, when it could be read). `dlq_reason` "
        "is one of `malformed_envelope` (not an InboundCommand), `unauthorised_source` "
        "(`source` not allow-listed), `unknown_command` (`type` and `version` not known), "
        "`invalid_payload` (payload does not match the command's schema, or a text holds "
        "U+0000), `implausible_time` (`occurred_at` in the future), `wrong_key` (record "
        "key is not the payload's "
        "`ward_id`), or `rejected_<code>` (refused by a rule, e.g. `rejected_already_exists`)."
    )


def _events_dlq_description() -> str:
    return (
        f"Events from `{_topic('events_topic')}` that a consumer could not read. "
        f"Key: the original key. {_DLQ_HEADERS}, and `dlq_consumer` (the consuming "
        "service). `dlq_reason` is `malformed_envelope`, `invalid_payload`, "
        "`newer_schema_version` (written by a newer contract than the consumer's), "
        "`unsupported_schema_version` (no upcaster), or `stream_gap` (a later event of a "
        "stream whose earlier one was dead-lettered: consumers apply each stream in order)."
    )


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI document of the Kafka interface, as a JSON-compatible dict."""
    from faststream.kafka import KafkaBroker
    from faststream.specification import AsyncAPI

    # Documentation only: a broker connects when started, and this one never is.
    broker = KafkaBroker(
        "127.0.0.1:9092",
        specification_url="kafka://127.0.0.1:9092",
        description=(
            "The local development broker. Deployments set their own bootstrap servers "
            "and security (KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, ...)."
        ),
    )
    commands_topic = _topic("commands_topic")

    @broker.subscriber(
        commands_topic,
        title=commands_topic,
        description=_commands_description(),
    )
    async def inbound_command(command: InboundCommand) -> None:
        """Carried out by the meetings service."""

    broker.publisher(
        _topic("events_topic"),
        title=_topic("events_topic"),
        description=_events_description(),
        schema=EventEnvelope,
    )
    broker.publisher(
        _topic("dlq_topic"),
        title=_topic("dlq_topic"),
        description=_commands_dlq_description(),
        schema=bytes,
    )
    broker.publisher(
        _topic("events_dlq_topic"),
        title=_topic("events_dlq_topic"),
        description=_events_dlq_description(),
        schema=bytes,
    )

    spec = AsyncAPI(
        broker,
        title="Chibo Kafka contract",
        version=CONTRACT_VERSION,
        description=(
            "Topics Chibo reads and writes. JSON Schemas of every command and event "
            f"payload are published next to this file ({BASE_ID}). Generated from "
            f"shared/contract by `{REGENERATE}`; do not edit by hand."
        ),
        identifier="urn:chibo:kafka-contract",
        schema_version=ASYNCAPI_VERSION,
    ).to_specification()
    doc: dict[str, Any] = spec.to_jsonable()
    _fix_correlation_ids(doc)
    return doc


def _fix_correlation_ids(doc: dict[str, Any]) -> None:
    """FastStream says every message carries a ``correlation_id`` header. Ours carry it in
    the envelope's body instead; dead-letter records carry none that means anything."""
    for message in doc.get("components", {}).get("messages", {}).values():
        ref = message.get("payload", {}).get("$ref", "")
        if ref.rsplit("/", 1)[-1] in (EventEnvelope.__name__, InboundCommand.__name__):
            message["correlationId"] = {
                "description": "The envelope's `correlation_id` field (optional).",
                "location": "$message.payload#/correlation_id",
            }
        else:
            message.pop("correlationId", None)


def render_json(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def render_yaml(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=True, allow_unicode=True, default_flow_style=False)


def build() -> dict[str, str]:
    """Every file's text, by path relative to the schemas directory ('/'-separated)."""
    files = {path: render_json(doc) for path, doc in json_schemas().items()}
    asyncapi = asyncapi_document()
    files["asyncapi.json"] = render_json(asyncapi)
    files["asyncapi.yaml"] = render_yaml(asyncapi)
    return dict(sorted(files.items()))


def _existing(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def differences(expected: dict[str, str], directory: Path = SCHEMA_DIR) -> list[str]:
    """Lines naming each file that differs from, is missing from, or is extra to ``expected``."""
    found = _existing(directory)
    problems: list[str] = []
    for path, text in expected.items():
        if path not in found:
            problems.append(f"missing: {path}")
        elif (directory / path).read_text(encoding="utf-8") != text:
            problems.append(f"differs: {path}")
    problems.extend(f"extra: {path}" for path in sorted(found - expected.keys()))
    return problems


def write(expected: dict[str, str], directory: Path = SCHEMA_DIR) -> list[str]:
    """Make ``directory`` hold exactly ``expected``; returns what changed."""
    changes = differences(expected, directory)
    for path in sorted(_existing(directory) - expected.keys()):
        (directory / path).unlink()
    for path, text in expected.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8", newline="\n")
    for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    return changes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.contract.export",
        description="Generate JSON Schema and AsyncAPI documents from shared/contract.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and list the files that are stale, missing or extra",
    )
    args = parser.parse_args(argv)
    expected = build()
    shown = (
        SCHEMA_DIR.relative_to(Path.cwd()) if SCHEMA_DIR.is_relative_to(Path.cwd()) else SCHEMA_DIR
    )
    if args.check:
        problems = differences(expected)
        if problems:
            print(f"{shown} is out of date; run `{REGENERATE}`:", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            return 1
        print(f"{shown}: {len(expected)} files up to date")
        return 0
    changes = write(expected)
    for line in changes:
        print(line)
    print(f"{shown}: {len(expected)} files, {len(changes)} changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
