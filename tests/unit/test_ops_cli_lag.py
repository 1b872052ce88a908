"""`chibo lag`'s arithmetic and names, without a broker."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from ops import lag
from shared.settings import KafkaSettings


def test_lag_is_end_minus_committed_and_never_negative() -> None:
    a, b, c = (TopicPartition("chibo.events.v1", p) for p in range(3))
    ends = {a: 10, b: 5, c: 7}
    committed = {a: OffsetAndMetadata(4, ""), b: OffsetAndMetadata(9, "")}
    assert lag.lag_per_partition(ends, committed) == {
        ("chibo.events.v1", 0): 6,
        ("chibo.events.v1", 1): 0,
        ("chibo.events.v1", 2): 7,  # never committed: the whole partition
    }


def test_the_groups_are_the_services_own() -> None:
    from services.meetings.bootstrap import INTAKE_GROUP
    from services.notifications.bootstrap import CONSUMER_GROUP as NOTIFICATIONS
    from services.reports.bootstrap import CONSUMER_GROUP as REPORTS

    groups = lag.consumer_groups(KafkaSettings())
    assert groups == {
        INTAKE_GROUP: ["chibo.commands.v1"],
        REPORTS: ["chibo.events.v1"],
        NOTIFICATIONS: ["chibo.events.v1"],
    }


def test_report_json_shape() -> None:
    report = lag.LagReport(
        groups=[
            lag.GroupLag("chibo-reports", {("chibo.events.v1", 1): 2, ("chibo.events.v1", 0): 1})
        ],
        relays=[lag.RelayLag("kafka-events", 0, 0, None, 3, 1.23456)],
        dlqs=[lag.DlqSize("chibo.commands.dlq.v1", 4)],
    )
    data = report.as_json()
    assert data["consumer_groups"][0]["total"] == 3
    assert [p["partition"] for p in data["consumer_groups"][0]["partitions"]] == [0, 1]
    assert data["relay"][0]["oldest_pending_s"] == 1.235
    assert data["dlq"] == [{"topic": "chibo.commands.dlq.v1", "records": 4}]
