"""`chibo events republish`: when it refuses and what it warns of (ops/events.py)."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from ops.cli import _run
from ops.events import RepublishPlan, TopicState
from shared.kafka import TopicConfigUnreadable

WHOLE = TopicState("chibo.events.v1", [0, 1, 2], records=30, retention={"retention.ms": -1})
TRUNCATED = dataclasses.replace(WHOLE, first_offsets={1: 7})
NEW = TopicState("chibo.events.v2", None)


def plan(**changes: object) -> RepublishPlan:
    base = RepublishPlan(
        relay="kafka-events",
        events=30,
        unpublished=0,
        checkpoint_position=30,
        topic=WHOLE,
        new_topic=None,
        new_topic_partitions=3,
        relay_leading=False,
        relays_connected=0,
        create_topics=True,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_leading_relay_is_refused_with_the_way_out() -> None:
    refusal = plan(relay_leading=True).refusal()
    assert refusal is not None and "stop every meetings replica first" in refusal


def test_a_standby_refuses_only_a_new_topic() -> None:
    """A standby would take the relay over and publish into the topic it was started
    with: harmless for the same topic, wrong for a new one."""
    assert plan(relays_connected=1).refusal() is None
    assert any("standing by" in w for w in plan(relays_connected=1).warnings())
    refusal = plan(relays_connected=1, new_topic=NEW).refusal()
    assert refusal is not None and "standing by" in refusal


def test_a_new_topic_must_be_empty_and_kept_for_ever() -> None:
    assert plan(new_topic=NEW).refusal() is None
    assert plan(new_topic=dataclasses.replace(NEW, partitions=[0], records=0)).refusal() is None
    used = dataclasses.replace(NEW, partitions=[0], records=3)
    assert "already holds 3 record(s)" in (plan(new_topic=used).refusal() or "")
    expiring = dataclasses.replace(NEW, partitions=[0], retention={"retention.ms": 86_400_000})
    assert "finite retention" in (plan(new_topic=expiring).refusal() or "")


def test_the_settings_name_the_new_topic() -> None:
    assert plan().settings == {}
    assert plan().destination == "chibo.events.v1"
    assert plan(new_topic=NEW).settings == {"KAFKA_EVENTS_TOPIC": "chibo.events.v2"}
    assert plan(new_topic=NEW).destination == "chibo.events.v2"


def test_a_truncated_topic_points_to_a_new_one() -> None:
    assert plan().warnings() == []
    [warning] = plan(topic=TRUNCATED).warnings()
    assert "--to-topic" in warning and "HistoryTruncated" in warning
    assert plan(topic=TRUNCATED, new_topic=NEW).warnings() == []
    finite = dataclasses.replace(WHOLE, retention={"retention.ms": 1000, "retention.bytes": -1})
    assert any("EventsHistoryCanExpire" in w for w in plan(topic=finite).warnings())
    missing = TopicState("chibo.events.v1", None)
    assert any("meetings creates it" in w for w in plan(topic=missing).warnings())
    assert any(
        "KAFKA_CREATE_TOPICS is off" in w
        for w in plan(topic=missing, create_topics=False).warnings()
    )


def test_a_topic_configuration_kafka_will_not_show_is_a_clear_failure() -> None:
    """topic_state reads the retention: without DescribeConfigs the broker answers with
    an error code, which the CLI reports (exit 1) instead of a traceback."""

    async def unreadable() -> None:
        raise TopicConfigUnreadable("chibo.events.v1: error 29 Topic authorization failed")

    with pytest.raises(typer.Exit) as failed:
        _run(unreadable)
    assert failed.value.exit_code == 1
