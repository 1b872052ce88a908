"""The checked-in contract documents match the models, and the documented example is valid."""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shared.contract.commands import COMMAND_TYPES
from shared.contract.events import EVENT_TYPES
from shared.contract.export import (
    REGENERATE,
    SCHEMA_DIR,
    build,
    command_schema_path,
    differences,
    event_schema_path,
)
from shared.contract.inbound import InboundCommand
from shared.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_DOC = ROOT / "docs" / "contract.md"
TOPICS = ("commands_topic", "events_topic", "dlq_topic", "events_dlq_topic")


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return build()


@pytest.fixture(scope="module")
def asyncapi(generated: dict[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(generated["asyncapi.json"])
    return doc


def default_topic(field: str) -> str:
    name = KafkaSettings.model_fields[field].default
    assert isinstance(name, str)
    return name


def test_checked_in_schemas_match_the_models(generated: dict[str, str]) -> None:
    problems = differences(generated, SCHEMA_DIR)
    assert not problems, (
        f"{SCHEMA_DIR} is out of date with shared/contract; run `{REGENERATE}` and commit "
        "the result:\n  " + "\n  ".join(problems)
    )


def test_generation_is_deterministic(generated: dict[str, str]) -> None:
    assert build() == generated


def test_every_registry_entry_has_a_schema_file(generated: dict[str, str]) -> None:
    assert COMMAND_TYPES and EVENT_TYPES
    expected = [command_schema_path(t, c.schema_version) for t, c in COMMAND_TYPES.items()]
    expected += [event_schema_path(t, e.schema_version) for t, e in EVENT_TYPES.items()]
    expected += ["EventEnvelope.json", "InboundCommand.json", "asyncapi.json"]
    for path in expected:
        assert path in generated, path
        assert (SCHEMA_DIR / path).is_file(), f"{path} missing; run `{REGENERATE}`"


@pytest.mark.parametrize("path", sorted(p for p in build() if p.endswith(".json")))
def test_json_files_are_canonical(path: str, generated: dict[str, str]) -> None:
    text = generated[path]
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    if path != "asyncapi.json":
        assert doc["$id"] == f"https://chibo.local/schemas/{path}"
        assert doc["title"]


def test_asyncapi_names_every_topic(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"].startswith(("3.", "2.6"))
    addresses = {
        channel.get("address") or channel["bindings"]["kafka"]["topic"]
        for channel in asyncapi["channels"].values()
    }
    for field in TOPICS:
        assert default_topic(field) in addresses, field


def _resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def _channel(asyncapi: dict[str, Any], topic: str) -> dict[str, Any]:
    for channel in asyncapi["channels"].values():
        if channel["bindings"]["kafka"]["topic"] == topic:
            assert isinstance(channel, dict)
            return channel
    raise AssertionError(f"no channel for {topic}")


def _payload_schema(asyncapi: dict[str, Any], topic: str) -> dict[str, Any]:
    (message,) = _channel(asyncapi, topic)["messages"].values()
    while "$ref" in message:
        message = _resolve(asyncapi, message["$ref"])
    payload = message["payload"]
    while "$ref" in payload:
        payload = _resolve(asyncapi, payload["$ref"])
    return payload


def test_asyncapi_commands_message_is_the_inbound_envelope(asyncapi: dict[str, Any]) -> None:
    schema = _payload_schema(asyncapi, default_topic("commands_topic"))
    assert "message_id" in schema["properties"]
    assert "message_id" in schema["required"]
    assert set(schema["properties"]) == set(InboundCommand.model_fields)


def test_asyncapi_events_message_is_the_event_envelope(asyncapi: dict[str, Any]) -> None:
    schema = _payload_schema(asyncapi, default_topic("events_topic"))
    assert {"event_id", "event_type", "schema_version", "payload"} <= set(schema["properties"])


def test_asyncapi_dlq_channels_describe_the_headers(asyncapi: dict[str, Any]) -> None:
    for field in ("dlq_topic", "events_dlq_topic"):
        description = _channel(asyncapi, default_topic(field))["description"]
        for header in ("dlq_reason", "dlq_detail", "dlq_source", "dlq_at"):
            assert header in description, (field, header)
    assert "dlq_message_id" in _channel(asyncapi, default_topic("dlq_topic"))["description"]


def _doc_example(name: str) -> str:
    text = CONTRACT_DOC.read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- example:{name} -->\s*```[a-z]*\n(.*?)\n```\s*<!-- /example:{name} -->",
        text,
        re.DOTALL,
    )
    assert match, f"docs/contract.md has no <!-- example:{name} --> block"
    return match.group(1)


def test_documented_inbound_example_is_valid() -> None:
    line = _doc_example("inbound")
    assert "\n" not in line.strip(), "kcat -l sends one record per line: keep it on one line"
    inbound = InboundCommand.model_validate_json(line)
    command_cls = COMMAND_TYPES[inbound.type]
    assert inbound.version == command_cls.schema_version
    command = command_cls.model_validate(inbound.payload)
    ward_id, _cell_id = command.scope()
    assert f"-k {ward_id} " in CONTRACT_DOC.read_text(encoding="utf-8"), (
        "the kcat example's key must be the payload's ward id"
    )


def test_contract_doc_names_every_topic_and_the_regenerate_command() -> None:
    text = CONTRACT_DOC.read_text(encoding="utf-8")
    for field in TOPICS:
        assert default_topic(field) in text, field
    assert "python -m shared.contract.export" in text
