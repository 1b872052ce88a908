"""The Prometheus rules, config and Grafana dashboard, checked offline with the real
``promtool`` (Debian package ``prometheus``; scripts/setup.sh installs it).

- ``promtool check rules`` and ``promtool test rules`` (deploy/prometheus/rules/tests/)
  pass, and those tests make every alert both fire and stay quiet;
- ``promtool check config`` accepts deploy/prometheus/prometheus.yml, as committed and as
  rendered for the local stack (the rule files then resolve and are checked with it), and
  the in-cluster deploy/prometheus/kubernetes.yml (its relabelling; Debian's promtool
  lacks Kubernetes discovery, so with file discovery in its place; tests/test_k8s_manifests.py
  applies the relabelling to the rendered manifests);
- every alert has a severity, a summary, a description and a runbook in
  docs/operations.md whose anchor exists;
- every dashboard panel has a datasource, every query parses as PromQL (each one is
  checked by ``promtool check rules`` as a recording rule), and the rows are there;
- no rule or panel queries a ``chibo_*`` metric that the code does not define (a
  counter's ``<name>_created`` companion counts as defined with the counter), and
  docs/operations.md documents every metric they query.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ops.prometheus import (
    KUBERNETES_CONFIG,
    PROMETHEUS_CONFIG,
    RULES_DIR,
    promtool_binary,
    scrape_config,
    with_file_discovery,
)
from ops.stack import PROJECT_ROOT

RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
RULE_TESTS = sorted((RULES_DIR / "tests").glob("*.test.yml"))
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "chibo-overview.json"
DATASOURCES = PROJECT_ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
OPERATIONS = PROJECT_ROOT / "docs" / "operations.md"
SEVERITIES = {"critical", "warning", "info"}
DASHBOARD_ROWS = (
    "Service health",
    "Throughput",
    "Consumer lag",
    "Relay",
    "Dead letters",
    "Notifications",
    "Petitions and deadlines",
    "Domain",
)
# Metric names in PromQL: our own, the lag monitor's and FastStream's (series suffixes of
# histograms are stripped to the metric's name).
METRIC_NAME = re.compile(r"\b((?:chibo|kafka_consumer|faststream)_[a-z0-9_]*[a-z0-9])\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = promtool_binary()
    assert binary, "promtool is missing: scripts/setup.sh installs it (Debian package prometheus)"
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def doc_anchors() -> set[str]:
    return {
        github_anchor(m.group(1))
        for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", OPERATIONS.read_text(encoding="utf-8"), re.M)
    }


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def metric_names(expr: str) -> set[str]:
    names = set()
    for name in METRIC_NAME.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


# --- promtool ------------------------------------------------------------------------------


def test_rule_files_exist() -> None:
    assert RULE_FILES, f"no rule files in {RULES_DIR}"
    assert RULE_TESTS, f"no rule tests in {RULES_DIR / 'tests'}"


def test_promtool_check_rules() -> None:
    assert_ok(promtool("check", "rules", *RULE_FILES))


def test_promtool_test_rules() -> None:
    assert_ok(promtool("test", "rules", *RULE_TESTS))


def test_promtool_check_config_as_committed() -> None:
    assert_ok(promtool("check", "config", PROMETHEUS_CONFIG))


def test_promtool_check_config_rendered_for_the_local_stack(tmp_path: Path) -> None:
    config = scrape_config(
        {"meetings": "127.0.0.1:8001", "reports": "127.0.0.1:8002", "notifications": "h:8003"},
        interval="1s",
    )
    assert config["rule_files"] == [str(RULES_DIR / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", path)
    assert_ok(result)
    for rule_file in RULE_FILES:  # the rules were found through the rendered config
        assert rule_file.name in result.stdout + result.stderr


def test_promtool_check_config_for_kubernetes(tmp_path: Path) -> None:
    committed = yaml.safe_load(KUBERNETES_CONFIG.read_text(encoding="utf-8"))
    assert committed["rule_files"] == yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]
    assert all("kubernetes_sd_configs" in job for job in committed["scrape_configs"])
    path = tmp_path / "kubernetes.yml"
    path.write_text(yaml.safe_dump(with_file_discovery(committed, [str(tmp_path / "t.json")])))
    assert_ok(promtool("check", "config", path))


# --- the rules' shape ---------------------------------------------------------------------


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    anchors = doc_anchors()
    rules = alert_rules()
    assert rules
    for rule in rules:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = rule.get("annotations", {})
        assert str(annotations.get("summary", "")).strip(), f"{name}: summary"
        assert str(annotations.get("description", "")).strip(), f"{name}: description"
        url = annotations.get("runbook_url", "")
        match = re.fullmatch(r"docs/operations\.md#([a-z0-9\-_]+)", url)
        assert match, f"{name}: runbook_url {url!r} is not docs/operations.md#<anchor>"
        assert match.group(1) in anchors, f"{name}: docs/operations.md has no #{match.group(1)}"


def test_expected_alerts_are_defined() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= {
        "ServiceDown",
        "ConsumerLagging",
        "ConsumerLagGrowing",
        "ConsumerApplyFailing",
        "RelayStalled",
        "RelayLagHigh",
        "NoRelayLeader",
        "RelayErrors",
        "DeadLetterGrowing",
        "NotificationsFailing",
        "NotificationsDeadLettered",
        "NotificationTimersFailing",
        "NotificationsContactLookupFailing",
        "NotificationsBacklog",
        "DeadlineSchedulerStalled",
        "PetitionEscalationLate",
        "PetitionsOverdueAtTop",
    }


def test_rule_tests_make_every_alert_fire_and_stay_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert not names - fired, f"no rule test where these fire: {sorted(names - fired)}"
    assert not names - quiet, f"no rule test where these stay quiet: {sorted(names - quiet)}"


# --- the dashboard -------------------------------------------------------------------------


def test_dashboard_panels_have_a_known_datasource() -> None:
    uids = {
        ds["uid"]
        for path in DATASOURCES.glob("*.y*ml")
        for ds in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    }
    # Panels name it through the dashboard's datasource variable, which defaults to the
    # provisioned Prometheus (and is asked for when the dashboard is imported elsewhere).
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] in uids
    for panel in dashboard()["panels"]:
        if panel["type"] in {"row", "text"}:
            assert not panel.get("targets"), f"{panel['title']}: a {panel['type']} queries nothing"
            continue
        assert panel.get("datasource", {}).get("uid") == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target.get("datasource", {}).get("uid") == "${datasource}", panel["title"]
            assert target.get("expr", "").strip(), f"{panel['title']}: empty expr"
            assert target.get("refId"), f"{panel['title']}: refId"


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool has no offline "parse this query", but it parses a recording rule's expr."""
    exprs = dashboard_exprs()
    assert exprs
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", path)
    listing = "\n".join(f"dashboard:query_{i}: [{t}] {e}" for i, (t, e) in enumerate(exprs))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{listing}"


def test_dashboard_rows_and_domain_row() -> None:
    panels = dashboard()["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == list(DASHBOARD_ROWS)
    domain = rows.index("Domain")
    after_domain = panels[[p["title"] for p in panels].index("Domain") + 1 :]
    assert domain == len(rows) - 1 and after_domain, "the Domain row is last and not empty"
    exprs = " ".join(t["expr"] for p in after_domain for t in p.get("targets", []))
    assert "chibo_meetings_held_total" in exprs  # meetings held this month
    assert "chibo_petitions_open" in exprs  # petitions open by level


def test_dashboard_grid_has_no_overlapping_panels() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} is wider than the grid"
        for y in range(pos["y"], pos["y"] + pos["h"]):
            for x in range(pos["x"], pos["x"] + pos["w"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


# --- metric names: defined in code, documented ----------------------------------------------


def queried_metrics() -> set[str]:
    exprs = [str(rule["expr"]) for rule in alert_rules()] + [e for _, e in dashboard_exprs()]
    return set().union(*(metric_names(e) for e in exprs))


def test_rules_and_dashboard_query_only_metrics_the_code_defines() -> None:
    sources = "\n".join(
        p.read_text(encoding="utf-8")
        for folder in ("services", "shared")
        for p in (PROJECT_ROOT / folder).rglob("*.py")
    )
    ours = {m for m in queried_metrics() if not m.startswith("faststream_")}
    assert ours

    def defined(name: str) -> bool:
        if f'"{name}"' in sources:
            return True
        # prometheus_client's creation-time companion of a counter (text format 0.0.4)
        counter = name.removesuffix("_created") + "_total"
        return name.endswith("_created") and f'"{counter}"' in sources

    missing = sorted(m for m in ours if not defined(m))
    assert not missing, f"queried but defined nowhere in services/ or shared/: {missing}"


def test_operations_doc_documents_every_queried_metric() -> None:
    doc = OPERATIONS.read_text(encoding="utf-8")
    missing = sorted(m for m in queried_metrics() if f"`{m}`" not in doc)
    assert not missing, f"docs/operations.md does not document: {missing}"
