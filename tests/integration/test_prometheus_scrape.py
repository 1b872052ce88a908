"""A real Prometheus server (the Debian ``prometheus`` binary) scrapes the real stack with
the project's own config (deploy/prometheus/prometheus.yml: same jobs, labels and rule
files; only the targets point at the test stack's free ports, and it scrapes every
second). Through its HTTP API: every job is up, the rules are loaded, the key series
exist, and they move when meetings are scheduled through the meetings API; the deadline
scheduler's scans are counted, and a petition taken up the whole ladder on a moved clock
fires PetitionsOverdueAtTop.

Also here, because it needs the running services: the naming check of our own metrics
against Prometheus conventions, on each service's /metrics.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ops.prometheus import RULES_DIR, LocalPrometheus, scrape_config, stack_targets
from ops.stack import SERVICES, Stack
from tests.integration.helpers import daytime, registered_ward_sync, schedule_body, ward_auth
from tests.integration.test_deadline_scheduler import DAY, escalations, new_ward

T = TypeVar("T")

JOBS = {f"chibo-{name}" for name in SERVICES}
KEY_SERIES = (
    "chibo_commands_total",
    "chibo_events_appended_total",
    "chibo_relay_lag_events",
    "chibo_relay_lag_seconds",
    "chibo_relay_is_leader",
    "chibo_relay_published_events_total",
    "chibo_consumed_events_total",
    "chibo_notifications_sent_total",
    "chibo_notifications_pending",
    "chibo_petition_deadlines_pending",
    "chibo_petition_oldest_overdue_seconds",
    "chibo_deadline_scheduler_runs_total",
    "chibo_org_units_off_the_ladder",
    "chibo_ready",
    "chibo_dlq_retained_records",
    "chibo_events_history_can_expire",
    "chibo_relay_checkpoint_ahead",
    "chibo_notifications_unaddressed_total",
    "faststream_received_messages_total",
    "faststream_received_processed_messages_total",
)
MOVING = (
    "chibo_commands_total",
    "chibo_events_appended_total",
    "chibo_relay_published_events_total",
    'faststream_received_messages_total{job="chibo-reports"}',
    'faststream_received_messages_total{job="chibo-notifications"}',
    'chibo_consumed_events_total{outcome="applied"}',
    "chibo_notifications_sent_total",
)
LAG = "kafka_consumer_lag_messages"


def poll(probe: Callable[[], T | None], *, what: str, timeout_s: float = 45.0) -> T:
    """Call ``probe`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what} not reached within {timeout_s}s (last value: {last!r})")


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    config = scrape_config(stack_targets(stack), interval="1s")
    server = LocalPrometheus(tmp_path_factory.mktemp("prometheus"), config)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def total(prometheus: LocalPrometheus, selector: str) -> float:
    return prometheus.scalar(f"sum({selector})") or 0.0


def test_every_chibo_job_is_up(running_stack: Stack, prometheus: LocalPrometheus) -> None:
    def all_up() -> dict[str, float] | None:
        result = prometheus.query('up{job=~"chibo-.*"}')
        values = {r["metric"]["job"]: float(r["value"][1]) for r in result}
        return values if set(values) == JOBS and all(v == 1 for v in values.values()) else None

    up = poll(all_up, what="up == 1 for every chibo job")
    assert set(up) == JOBS
    # The committed config's target labels came through the rewrite.
    services = {r["metric"]["service"] for r in prometheus.query('up{job=~"chibo-.*"}')}
    assert services == set(SERVICES)


def test_the_rule_files_are_loaded(prometheus: LocalPrometheus) -> None:
    expected_groups = {
        group["name"]
        for path in RULES_DIR.glob("*.yml")
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    }
    expected_alerts = {
        rule["alert"]
        for path in RULES_DIR.glob("*.yml")
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    groups = prometheus.api("rules")["groups"]
    assert {g["name"] for g in groups} == expected_groups
    loaded = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert loaded == expected_alerts
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] != "err", f"{rule['name']}: {rule.get('lastError')}"


def test_key_series_exist(running_stack: Stack, prometheus: LocalPrometheus) -> None:
    ward = registered_ward_sync(running_stack)  # commands, so labelled counters have series
    response = httpx.post(
        f"{running_stack.service_url('meetings')}/v1/meetings",
        json=schedule_body(ward),
        headers=ward_auth(running_stack, ward),
        timeout=10.0,
    )
    assert response.status_code == 201, response.text

    def all_present() -> bool:
        return all(prometheus.query(name) for name in KEY_SERIES)

    try:
        poll(all_present, what="every key series in Prometheus")
    except AssertionError:
        absent = [name for name in KEY_SERIES if not prometheus.query(name)]
        raise AssertionError(f"series missing from Prometheus: {absent}") from None


def test_consumer_lag_series_reach_prometheus(
    running_stack: Stack, prometheus: LocalPrometheus
) -> None:
    groups = {
        name: {
            s.labels["group"]
            for family in text_string_to_metric_families(
                httpx.get(f"{running_stack.service_url(name)}/metrics", timeout=5.0).text
            )
            if family.name == LAG
            for s in family.samples
        }
        for name in SERVICES
    }
    assert groups == {
        "meetings": {"chibo-meetings-intake"},
        "reports": {"chibo-reports"},
        "notifications": {"chibo-notifications"},
    }
    in_prometheus = poll(
        lambda: {r["metric"]["group"] for r in prometheus.query(LAG)} or None,
        what=f"{LAG} in Prometheus",
    )
    assert in_prometheus >= {"chibo-reports", "chibo-notifications", "chibo-meetings-intake"}


def test_series_move_under_load(running_stack: Stack, prometheus: LocalPrometheus) -> None:
    with daytime(running_stack):  # quiet hours would hold the notices back
        poll(lambda: prometheus.query("chibo_relay_is_leader == 1"), what="a relay leader")
        before = {selector: total(prometheus, selector) for selector in MOVING}

        ward = registered_ward_sync(running_stack, cells=5)
        auth = ward_auth(running_stack, ward)
        with httpx.Client(base_url=running_stack.service_url("meetings"), timeout=10.0) as client:
            for cell in range(1, 6):
                response = client.post("/v1/meetings", json=schedule_body(ward, cell), headers=auth)
                assert response.status_code == 201, response.text

        def moved() -> dict[str, float] | None:
            now = {selector: total(prometheus, selector) for selector in MOVING}
            stuck = {s for s in MOVING if now[s] < before[s] + 5}
            return None if stuck else now

        try:
            poll(moved, what="every key series to grow by the 5 meetings")
        except AssertionError:
            now = {s: total(prometheus, s) for s in MOVING}
            raise AssertionError(f"before {before}, now {now}") from None
        assert total(prometheus, 'chibo_commands_total{outcome="accepted",door="http"}') >= 5


def test_every_meetings_replica_counts_scheduler_scans(
    running_stack: Stack, prometheus: LocalPrometheus
) -> None:
    """What DeadlineSchedulerStalled watches moves on every meetings instance."""
    poll(
        lambda: prometheus.query("increase(chibo_deadline_scheduler_runs_total[5s]) > 0"),
        what="scheduler scans counted in Prometheus",
    )
    scanning = {
        r["metric"]["instance"]
        for r in prometheus.query("increase(chibo_deadline_scheduler_runs_total[5s]) > 0")
    }
    meetings = {r["metric"]["instance"] for r in prometheus.query('up{job="chibo-meetings"}')}
    assert scanning == meetings


def firing(prometheus: LocalPrometheus, alertname: str) -> list[dict[str, str]]:
    return [
        a["labels"]
        for a in prometheus.api("alerts")["alerts"]
        if a["labels"]["alertname"] == alertname and a["state"] == "firing"
    ]


async def test_a_petition_overdue_at_the_top_fires_petitions_overdue_at_top(
    running_stack: Stack, prometheus: LocalPrometheus
) -> None:
    """The whole ladder (cell 7 days, ward 15, district 30, province 45) on a moved clock:
    the escalation counter's level and reason labels, and its _created companion that the
    alert needs to see the first one, come through the real scrape."""
    offset_file = running_stack.settings.clock_offset_file
    assert offset_file is not None
    offset = 0.0
    ward = await new_ward(running_stack)
    petition = await ward.raise_petition()
    try:
        for escalated, days in enumerate((8, 16, 31), start=1):
            offset += days * DAY
            offset_file.write_text(str(offset))
            await escalations(running_stack, petition, escalated)
        offset += 46 * DAY  # past the province's 45 days: nowhere left to go
        offset_file.write_text(str(offset))
        alerts = await asyncio.to_thread(
            poll,
            lambda: [
                a
                for a in firing(prometheus, "PetitionsOverdueAtTop")
                if a.get("level") == "province"
            ],
            what="PetitionsOverdueAtTop firing for the province level",
            timeout_s=60.0,
        )
    finally:
        offset_file.write_text("0")
    assert alerts[0]["job"] == "chibo-meetings" and alerts[0]["severity"] == "info"
    reasons = {
        (r["metric"]["reason"], r["metric"]["level"])
        for r in prometheus.query("chibo_petition_escalations_created")
    }
    assert {
        ("deadline", "ward"),
        ("deadline", "district"),
        ("deadline", "province"),
        ("overdue_at_top", "province"),
    } <= reasons


# --- naming conventions of our own metrics, on the services' /metrics ----------------------

OURS = re.compile(r"^(chibo_|kafka_consumer_)")
UNBOUNDED_LABELS = re.compile(
    r"^(.*_id|id|member|recipient|email|e_?mail_address|address|subject|user|name|phone|"
    r"message|detail|error|url|path|token)$"
)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
TIME_WORDS = re.compile(
    r"(^|_)(duration|latency|elapsed|time|age|seconds|ms|millis|milliseconds)(_|$)"
)
SIZE_WORDS = re.compile(r"(^|_)(size|bytes|length)(_|$)")


def violations(service: str, text: str) -> list[str]:
    """What breaks the conventions among our own metrics in one /metrics document.

    Names and types come from the ``# TYPE`` lines, so a labelled counter that has not
    counted yet (no samples) is checked too; labels from the samples there are.
    """
    helps = dict(re.findall(r"^# HELP (\S+)[ \t]?(.*)$", text, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    problems: list[str] = []
    for name, kind in types.items():
        if not OURS.match(name):
            continue
        if (
            kind == "gauge"
            and name.endswith("_created")
            and (
                f"{name.removesuffix('_created')}_total" in types
                or name.removesuffix("_created") in types
            )
        ):
            continue  # prometheus_client's creation-time companion of a counter/histogram
        where = f"{service}: {name} ({kind})"
        if not helps.get(name, "").strip():
            problems.append(f"{where}: no HELP text")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"{where}: a counter must end in _total")
        if kind != "counter" and name.endswith("_total"):
            problems.append(f"{where}: only counters end in _total")
        base = name.removesuffix("_total")
        if TIME_WORDS.search(base) and not base.endswith("_seconds"):
            problems.append(f"{where}: a time is measured in _seconds")
        if SIZE_WORDS.search(base) and not base.endswith("_bytes"):
            problems.append(f"{where}: a size is measured in _bytes")
    for family in text_string_to_metric_families(text):
        if not OURS.match(family.name):
            continue
        for sample in family.samples:
            where = f"{service}: {sample.name}"
            for label, value in sample.labels.items():
                if label in {"le", "quantile"}:
                    continue
                if UNBOUNDED_LABELS.match(label):
                    problems.append(f"{where}: label {label!r} looks unbounded")
                if UUID.search(value) or "@" in value:
                    problems.append(f"{where}: label {label}={value!r} holds an identifier")
    return sorted(set(problems))


def test_our_metrics_follow_prometheus_naming_conventions(running_stack: Stack) -> None:
    ward = registered_ward_sync(running_stack)  # so the labelled series have samples
    response = httpx.post(
        f"{running_stack.service_url('meetings')}/v1/meetings",
        json=schedule_body(ward),
        headers=ward_auth(running_stack, ward),
        timeout=10.0,
    )
    assert response.status_code == 201, response.text
    problems: list[str] = []
    seen = 0
    for name in SERVICES:
        text = httpx.get(f"{running_stack.service_url(name)}/metrics", timeout=5.0).text
        seen += len([n for n in re.findall(r"^# TYPE (\S+) ", text, re.M) if OURS.match(n)])
        problems += violations(name, text)
    assert seen, "no chibo_ metric on any service"
    assert not problems, "\n".join(problems)


def test_the_naming_check_catches_violations() -> None:
    bad = """# HELP chibo_things Things, counted.
# TYPE chibo_things counter
# HELP chibo_things_total Things, as a gauge.
# TYPE chibo_things_total gauge
chibo_things_total 1.0
# HELP chibo_send_time_ms Send time.
# TYPE chibo_send_time_ms histogram
chibo_send_time_ms_bucket{le="+Inf"} 1.0
chibo_send_time_ms_count 1.0
chibo_send_time_ms_sum 1.0
# HELP chibo_payload_size Payload size.
# TYPE chibo_payload_size gauge
chibo_payload_size 10.0
# HELP chibo_mails_total
# TYPE chibo_mails_total counter
chibo_mails_total{recipient="a@example.org"} 1.0
# HELP chibo_applied_total Applied.
# TYPE chibo_applied_total counter
chibo_applied_total{event_id="0b6a1d3c-4a56-4f4c-9a8e-1b2c3d4e5f60"} 1.0
"""
    found = "\n".join(violations("test", bad))
    for expected in (
        "chibo_things (counter): a counter must end in _total",
        "chibo_things_total (gauge): only counters end in _total",
        "chibo_send_time_ms (histogram): a time is measured in _seconds",
        "chibo_payload_size (gauge): a size is measured in _bytes",
        "chibo_mails_total (counter): no HELP text",
        "chibo_applied_total: label 'event_id' looks unbounded",
        "label 'recipient' looks unbounded",
        "label 'event_id' looks unbounded",
        "holds an identifier",
    ):
        assert expected in found, f"{expected!r} not in:\n{found}"
