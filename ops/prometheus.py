"""A real Prometheus server next to the local stack, fed the project's own configuration.

The committed ``deploy/prometheus/prometheus.yml`` is written for the Docker Compose
network (targets ``meetings:8001`` and so on, rules under ``/etc/prometheus/rules``).
``scrape_config`` rewrites only what differs outside that network — each job's target
address, the rule files' folder and, optionally, the intervals — and keeps the job names,
labels and rule files, so what runs here is what is deployed.

Used by the scrape test (tests/integration/test_prometheus_scrape.py); by hand::

    .venv/bin/python -m ops.prometheus            # against the running `make up` stack

It needs the ``prometheus`` binary (Debian package ``prometheus``; scripts/setup.sh
installs it when run as root).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from ops.stack import PROJECT_ROOT, SERVICES, Stack, StackSettings, free_port, wait_for

PROMETHEUS_CONFIG = PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml"
# The in-cluster job: Kubernetes discovery with the relabelling to chibo-<service> jobs.
KUBERNETES_CONFIG = PROJECT_ROOT / "deploy" / "prometheus" / "kubernetes.yml"
RULES_DIR = PROJECT_ROOT / "deploy" / "prometheus" / "rules"
CONTAINER_RULES_DIR = "/etc/prometheus/rules"  # where docker-compose.yml mounts RULES_DIR
JOB_PREFIX = "chibo-"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )


def promtool_binary() -> str | None:
    return shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )


def scrape_config(
    targets: Mapping[str, str],
    *,
    source: Path = PROMETHEUS_CONFIG,
    rules_dir: Path = RULES_DIR,
    interval: str | None = None,
) -> dict[str, Any]:
    """The committed config with each ``chibo-<service>`` job pointed at ``targets[service]``
    (``host:port``) and the rule files read from ``rules_dir``.

    Fails when the committed config has a chibo job without a target given, or lacks one
    of ``targets``: a renamed job should break the test, not be skipped by it.
    """
    config: dict[str, Any] = copy.deepcopy(yaml.safe_load(source.read_text(encoding="utf-8")))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service, address in targets.items():
        job = jobs.get(f"{JOB_PREFIX}{service}")
        if job is None:
            raise KeyError(f"{source} has no scrape job {JOB_PREFIX}{service}")
        for static in job["static_configs"]:
            static["targets"] = [address]
    unknown = [n for n in jobs if n.startswith(JOB_PREFIX) and n[len(JOB_PREFIX) :] not in targets]
    if unknown:
        raise KeyError(f"no target given for the scrape jobs {unknown}")
    config["rule_files"] = [
        str(rules_dir / pattern[len(CONTAINER_RULES_DIR) + 1 :])
        if pattern.startswith(CONTAINER_RULES_DIR + "/")
        else pattern
        for pattern in config.get("rule_files", [])
    ]
    if interval is not None:
        glob = config.setdefault("global", {})
        glob["scrape_interval"] = interval
        glob["evaluation_interval"] = interval
        glob["scrape_timeout"] = interval
    return config


def with_file_discovery(config: Mapping[str, Any], files: list[str]) -> dict[str, Any]:
    """``config`` with each job's ``kubernetes_sd_configs`` replaced by file discovery from
    ``files``; everything else (the relabelling above all) unchanged.

    Debian's Prometheus is built without Kubernetes discovery, so this is how its
    ``promtool`` checks deploy/prometheus/kubernetes.yml and how a real Prometheus applies
    that job's relabelling to targets written as Kubernetes discovery would label them
    (tests/test_k8s_manifests.py)."""
    result: dict[str, Any] = copy.deepcopy(dict(config))
    for job in result["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["file_sd_configs"] = [{"files": list(files), "refresh_interval": "1s"}]
    return result


def stack_targets(stack: Stack) -> dict[str, str]:
    return {name: f"{stack.settings.host}:{stack.settings.service_port(name)}" for name in SERVICES}


@dataclass
class LocalPrometheus:
    """One Prometheus server process with its data, config and log under ``root``."""

    root: Path
    config: dict[str, Any]
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    binary: str | None = field(default_factory=prometheus_binary)
    startup_timeout_s: float = 60.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.root / "prometheus.log"

    def start(self) -> None:
        if self.binary is None:
            raise FileNotFoundError(
                "the prometheus binary is missing: install the Debian package `prometheus`"
                " (scripts/setup.sh does, as root)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        argv = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = self._proc
        wait_for(
            lambda: httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200,
            part="prometheus",
            timeout_s=self.startup_timeout_s,
            log=self.log_path,
            alive=lambda: proc.poll() is None,
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- HTTP API --------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5.0)
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus /api/v1/{path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {...}, "value": [ts, "1"]}, ...]``."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise RuntimeError(f"{expr!r} returned a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        """The single value of ``expr`` (e.g. a ``sum(...)``), or None when it is empty."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def main() -> None:  # pragma: no cover - a convenience for people, the tests use the class
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--interval", default="5s")
    args = parser.parse_args()
    stack = Stack(StackSettings())
    root = Path(tempfile.mkdtemp(prefix="chibo-prometheus-"))
    prom = LocalPrometheus(
        root, scrape_config(stack_targets(stack), interval=args.interval), port=args.port
    )
    prom.start()
    print(f"Prometheus on {prom.url} (data and log under {root}); Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        prom.stop()


if __name__ == "__main__":
    main()
