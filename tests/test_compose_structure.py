"""Structural checks of the Docker deployment: docker-compose.yml, the Dockerfile, the
Prometheus and Grafana files they mount.

Docker is not needed (nor used, unless `docker` is on PATH for the last test): the files are
parsed and cross-checked against each other and against the facts the services rely on
(environment variable names, ports, topics' broker settings), so a typo in one place that
would only show up at `docker compose up` fails here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
PYPROJECT = PROJECT_ROOT / "pyproject.toml"
PROMETHEUS_CONFIG = PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = PROJECT_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "chibo-overview.json"

APP_PORTS = {"meetings": 8001, "reports": 8002, "notifications": 8003}
INFRA = ("kafka", "postgres", "smtp", "prometheus", "grafana")
KAFKA_HOST_PORT = 29092
POSTGRES_HOST_PORT = 55432


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def service(name: str) -> dict[str, Any]:
    svc = compose()["services"].get(name)
    assert isinstance(svc, dict), f"service {name!r} missing from docker-compose.yml"
    return svc


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a list."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def depends_on(svc: dict[str, Any]) -> dict[str, str]:
    """Dependency name -> condition (the short list form means service_started)."""
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def published_ports(svc: dict[str, Any]) -> dict[int, int]:
    """Host port -> container port, for the short ("H:C", "IP:H:C") and long syntaxes."""
    result: dict[int, int] = {}
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            result[int(port["published"])] = int(port["target"])
            continue
        parts = str(port).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {port!r} is not published on the host"
        result[int(parts[-2])] = int(parts[-1])
    return result


def bind_mounts(svc: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of every bind mount from the repository."""
    mounts: list[tuple[Path, str]] = []
    for volume in svc.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((PROJECT_ROOT / volume["source"], volume["target"]))
            continue
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((PROJECT_ROOT / source).resolve(), target))
    return mounts


def host_path_of(svc: dict[str, Any], container_path: str) -> Path:
    """Translate a path inside a container to the repository path mounted there."""
    wanted = PurePosixPath(container_path)
    for host, target in bind_mounts(svc):
        target_path = PurePosixPath(target)
        if wanted == target_path or target_path in wanted.parents:
            return host.joinpath(*wanted.relative_to(target_path).parts)
    raise AssertionError(f"{container_path} is not mounted from the repository")


def healthcheck_command(svc: dict[str, Any]) -> list[str]:
    test = (svc.get("healthcheck") or {}).get("test")
    assert test, "no healthcheck test"
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(part) for part in test]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    pairs: list[tuple[str, str]] = []
    for ln in logical:
        op, _, args = ln.partition(" ")
        pairs.append((op.upper(), args.strip()))
    return pairs


# --- docker-compose.yml: services and images ---------------------------------------------------


def test_every_required_service_is_defined() -> None:
    services = compose()["services"]
    missing = [name for name in (*INFRA, *APP_PORTS) if name not in services]
    assert not missing, f"missing services: {missing}"


def test_images_are_the_agreed_ones_and_pinned() -> None:
    services = compose()["services"]
    assert service("kafka")["image"] == "apache/kafka:3.9.1"
    assert service("postgres")["image"].startswith("postgres:18")
    assert service("smtp")["image"].startswith("axllent/mailpit:")
    assert service("prometheus")["image"].startswith("prom/prometheus:")
    assert service("grafana")["image"].startswith("grafana/grafana:")
    for name, svc in services.items():
        image = svc.get("image")
        if image is None:
            assert "build" in svc, f"{name} has neither an image nor a build"
            continue
        reference = image.rsplit("/", 1)[-1]
        assert ":" in reference or "@sha256:" in image, f"{name}: image {image!r} is not pinned"
        tag = reference.split(":", 1)[1].split("@")[0] if ":" in reference else ""
        assert tag and tag != "latest", f"{name}: image {image!r} must use a concrete tag"


@pytest.mark.parametrize("name", sorted(APP_PORTS))
def test_app_services_build_the_shared_image_and_run_their_module(name: str) -> None:
    svc = service(name)
    build = svc.get("build")
    assert isinstance(build, dict), f"{name}: build must name the context and the Dockerfile"
    context = (PROJECT_ROOT / build.get("context", ".")).resolve()
    assert context == PROJECT_ROOT, f"{name}: the build context must be the repository root"
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    command = svc.get("command")
    if isinstance(command, str):
        command = command.split()
    assert command == ["python", "-m", f"services.{name}"]
    assert svc.get("restart") == "unless-stopped"


# --- ports ---------------------------------------------------------------------------------------


def test_published_host_ports() -> None:
    expected = {
        **{name: {port: port} for name, port in APP_PORTS.items()},
        "prometheus": {9090: 9090},
        "grafana": {3000: 3000},
        "postgres": {POSTGRES_HOST_PORT: 5432},
        "kafka": {KAFKA_HOST_PORT: KAFKA_HOST_PORT},
    }
    for name, ports in expected.items():
        published = published_ports(service(name))
        for host, container in ports.items():
            assert published.get(host) == container, f"{name}: expected {host}:{container}"
    assert published_ports(service("smtp")).get(8025) == 8025, "Mailpit UI must be on 8025"
    every_host_port = [p for svc in compose()["services"].values() for p in published_ports(svc)]
    duplicates = {p for p in every_host_port if every_host_port.count(p) > 1}
    assert not duplicates, f"host ports published twice: {duplicates}"


# --- environment of the services -----------------------------------------------------------------


def test_compose_environment_values_are_strings_or_numbers() -> None:
    # Compose rejects YAML booleans (and nulls read as unset) in an environment mapping.
    for name, svc in compose()["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, dict):
            for key, value in env.items():
                assert isinstance(value, str | int | float) and not isinstance(value, bool), (
                    f"{name}: {key}={value!r} must be quoted"
                )


@pytest.mark.parametrize("name", sorted(APP_PORTS))
def test_app_service_environment(name: str) -> None:
    env = environment(service(name))
    assert env["SERVICE_NAME"] == name
    assert env["HTTP_HOST"] == "0.0.0.0"
    assert int(env["HTTP_PORT"]) == APP_PORTS[name]
    assert published_ports(service(name))[APP_PORTS[name]] == int(env["HTTP_PORT"])

    # Tokens: the secret comes from the deployer, never from the file (no default).
    assert env["AUTH_JWT_SECRET"].startswith("${AUTH_JWT_SECRET:?")

    # The database URL must reach the postgres service with its own credentials.
    pg = environment(service("postgres"))
    url = urlsplit(env["DATABASE_URL"])
    assert url.scheme in {"postgresql", "postgres"}
    assert (url.hostname, url.port or 5432) == ("postgres", 5432)
    assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert url.path.lstrip("/") == pg["POSTGRES_DB"] == "chibo"

    # Every bootstrap server must be a listener Kafka advertises inside the network.
    advertised = environment(service("kafka"))["KAFKA_ADVERTISED_LISTENERS"]
    advertised_hosts = {item.split("://", 1)[1] for item in advertised.split(",")}
    for server in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
        assert server in advertised_hosts and server.startswith("kafka:"), server

    if name == "notifications":
        assert env["SMTP_HOST"] == "smtp"
        assert env["SMTP_PORT"] == "1025"
    else:
        assert "SMTP_HOST" not in env


# --- health checks and start-up order ------------------------------------------------------------


def test_every_dependency_has_a_healthcheck() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        for dep, condition in depends_on(svc).items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            assert condition in {"service_started", "service_healthy"}, (name, dep, condition)
            cmd = healthcheck_command(services[dep])
            assert cmd[0] in {"CMD", "CMD-SHELL"} and len(cmd) > 1, f"{dep}: bad healthcheck"


@pytest.mark.parametrize("name", sorted(APP_PORTS))
def test_app_services_wait_for_healthy_kafka_and_postgres(name: str) -> None:
    deps = depends_on(service(name))
    assert deps.get("kafka") == "service_healthy"
    assert deps.get("postgres") == "service_healthy"
    if name == "notifications":
        assert deps.get("smtp") == "service_healthy"


@pytest.mark.parametrize("name", sorted(APP_PORTS))
def test_app_healthcheck_is_valid_python_hitting_ready_on_its_port(name: str) -> None:
    cmd = healthcheck_command(service(name))
    assert cmd[:3] == ["CMD", "python", "-c"], "the slim image has no curl: use python"
    code = cmd[3]
    compile(code, f"<{name} healthcheck>", "exec")  # a syntax error would never turn healthy
    urls = re.findall(r"http://[^'\"]+", code)
    assert len(urls) == 1, code
    url = urlsplit(urls[0])
    assert url.hostname in {"localhost", "127.0.0.1"}
    assert url.port == APP_PORTS[name]
    assert url.path == "/ready"


def test_infrastructure_healthchecks() -> None:
    kafka = " ".join(healthcheck_command(service("kafka")))
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in kafka
    assert "--bootstrap-server localhost:9092" in kafka
    postgres = healthcheck_command(service("postgres"))
    assert "pg_isready" in " ".join(postgres)
    assert healthcheck_command(service("smtp"))


# --- Kafka (KRaft) and PostgreSQL ----------------------------------------------------------------


def _listeners(value: str) -> dict[str, str]:
    return dict(item.split("://", 1) for item in value.split(","))


def test_kafka_runs_kraft_single_node() -> None:
    env = environment(service("kafka"))
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    controller_names = env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )

    # The single voter is this node, on its controller listener's port.
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1
    voter_id, voter_address = voters[0].split("@")
    assert voter_id == node_id
    controller_port = voter_address.rsplit(":", 1)[1]
    assert any(listeners[n].endswith(f":{controller_port}") for n in controller_names)

    # Every listener has a protocol; controllers are not advertised to clients.
    assert set(listeners) <= set(protocols)
    assert not set(controller_names) & set(advertised)
    assert set(advertised) <= set(listeners)
    assert env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT") in advertised

    # In-network clients use kafka:9092; the host uses localhost:<published port>.
    assert "kafka:9092" in advertised.values()
    host_listener = next(n for n, a in advertised.items() if a.startswith("localhost:"))
    assert advertised[host_listener] == f"localhost:{KAFKA_HOST_PORT}"
    assert listeners[host_listener].endswith(f":{KAFKA_HOST_PORT}")

    # A single broker cannot hold more than one replica of the internal topics.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "ZOOKEEPER" not in " ".join(env)


def test_stateful_services_keep_data_in_named_volumes() -> None:
    named = set((compose().get("volumes") or {}).keys())

    def volume_targets(name: str) -> dict[str, str]:
        return {
            str(v).split(":")[1]: str(v).split(":")[0]
            for v in service(name).get("volumes") or []
            if isinstance(v, str) and not v.startswith((".", "/"))
        }

    kafka = volume_targets("kafka")
    log_dirs = environment(service("kafka")).get("KAFKA_LOG_DIRS", "/var/lib/kafka/data")
    assert kafka.get(log_dirs) in named, "Kafka's log.dirs must be on a named volume"
    # PostgreSQL 18 images keep PGDATA under /var/lib/postgresql/18/docker and refuse to start
    # with a volume on the old /var/lib/postgresql/data path.
    postgres = volume_targets("postgres")
    assert postgres.get("/var/lib/postgresql") in named
    assert "/var/lib/postgresql/data" not in postgres


# --- files mounted from the repository -----------------------------------------------------------


def test_every_file_mounted_from_the_repository_exists() -> None:
    mounted = [
        (name, host) for name, svc in compose()["services"].items() for host, _ in bind_mounts(svc)
    ]
    assert mounted, "Prometheus and Grafana should mount their configuration"
    for name, host in mounted:
        assert host.exists(), f"{name} mounts {host}, which does not exist"
        assert PROJECT_ROOT in host.parents, f"{name} mounts {host} from outside the repository"


def test_prometheus_scrapes_the_three_services() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert host_path_of(service("prometheus"), "/etc/prometheus/prometheus.yml") == (
        PROMETHEUS_CONFIG
    )
    assert config["global"]["scrape_interval"] == "5s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, port in APP_PORTS.items():
        job = jobs.get(f"chibo-{name}")
        assert job, f"no scrape job chibo-{name}"
        assert job.get("metrics_path", "/metrics") == "/metrics"
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert targets == [f"{name}:{port}"]
        # The target must be the port the service actually listens on in the network.
        assert int(environment(service(name))["HTTP_PORT"]) == port
    assert set(depends_on(service("prometheus"))) >= set(APP_PORTS)


def test_prometheus_rule_files_are_mounted_and_define_service_down() -> None:
    prometheus = service("prometheus")
    patterns = load_yaml(PROMETHEUS_CONFIG)["rule_files"]
    rule_files: list[Path] = []
    for pattern in patterns:
        folder, glob = pattern.rsplit("/", 1)
        host_folder = host_path_of(prometheus, folder)
        rule_files += [p for p in host_folder.iterdir() if fnmatch.fnmatch(p.name, glob)]
    assert rule_files, f"rule_files {patterns} match no file in the mounted folder"

    alerts = {}
    for path in rule_files:
        for group in load_yaml(path)["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts[rule["alert"]] = rule
    down = alerts.get("ServiceDown")
    assert down, "a ServiceDown alert is expected"
    assert re.sub(r"\s+", "", str(down["expr"])) == 'up{job=~"chibo-.*"}==0'
    assert down["for"] == "1m"
    assert down["annotations"]["summary"] and down["annotations"]["description"]


# --- Grafana -------------------------------------------------------------------------------------


def test_grafana_provisioning_is_consistent() -> None:
    grafana = service("grafana")
    provisioning = host_path_of(grafana, "/etc/grafana/provisioning")
    assert provisioning == GRAFANA_DIR / "provisioning"

    datasources = [
        ds
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for ds in load_yaml(path)["datasources"]
    ]
    prometheus = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert len(prometheus) == 1
    url = urlsplit(prometheus[0]["url"])
    assert url.hostname == "prometheus" and url.port in published_ports(service("prometheus"))

    providers = [
        pr
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for pr in load_yaml(path)["providers"]
    ]
    assert providers
    for provider in providers:
        assert provider["type"] == "file"
        dashboards = host_path_of(grafana, provider["options"]["path"])
        assert dashboards == GRAFANA_DIR / "dashboards"
        assert DASHBOARD in dashboards.glob("*.json")
    assert "prometheus" in depends_on(grafana)
    assert environment(grafana).get("GF_AUTH_ANONYMOUS_ENABLED") == "true"


def test_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "chibo-overview"
    assert dashboard["title"] == "Chibo — overview"

    datasource_uids = {
        ds["uid"]
        for path in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml")
        for ds in load_yaml(path)["datasources"]
    }
    # Panels name the datasource through a variable, so that the dashboard imported into
    # another Grafana asks which Prometheus to use; here it defaults to the provisioned one.
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    assert variable["current"]["value"] in datasource_uids
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    exprs: list[str] = []
    for panel in panels:
        assert panel["title"] and panel["type"] and panel["gridPos"]
        for target in panel["targets"]:
            datasource = target.get("datasource") or panel.get("datasource")
            assert datasource["uid"] == "${datasource}", f"{panel['title']}: fixed datasource"
            exprs.append(target["expr"])
    everything = "\n".join(exprs)
    for needed in (
        'up{job=~"chibo-.*"}',
        "rate(faststream_received_messages_total[1m])",
        "kafka_consumer_lag_messages",
        "chibo_relay_lag_events",
    ):
        assert needed in everything, f"no panel queries {needed}"
    # The job selector of the "Service up" panel must match every scraped chibo job.
    jobs = {job["job_name"] for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    selected = {job for job in jobs if re.fullmatch("chibo-.*", job)}
    assert selected == {f"chibo-{name}" for name in APP_PORTS}


# --- Dockerfile and .dockerignore ----------------------------------------------------------------


def test_dockerfile_builds_a_non_root_python_311_image() -> None:
    assert DOCKERFILE.is_file()
    instructions = dockerfile_instructions()
    froms = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert froms, "no FROM"
    for index in froms:
        image = instructions[index][1].split()[0]
        assert image.startswith("python:3.11"), f"unexpected base image {image}"
    final_stage = instructions[froms[-1] :]
    assert final_stage[0][1].split()[0] == "python:3.11-slim"

    users = [args.split(":")[0].strip() for op, args in final_stage if op == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    assert users[-1] not in {"root", "0"}

    runs = " ".join(args for op, args in final_stage if op == "RUN")
    assert re.search(r"pip install --no-cache-dir -c constraints\.txt \.(\s|$)", runs), runs
    copies = [args for op, args in final_stage if op == "COPY"]
    assert copies, "the runtime stage must copy the project in"


def test_dockerfile_ships_everything_pip_install_needs() -> None:
    """The project metadata decides what `pip install .` reads; the image must contain it."""
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = {pattern.rstrip("*").rstrip(".") for pattern in packages}
    required = {*top_level, "pyproject.toml", "constraints.txt", pyproject["project"]["readme"]}
    text = DOCKERFILE.read_text(encoding="utf-8")
    words = set(re.findall(r"[\w.\-/]+", text))
    missing = {path for path in required if path not in words and f"{path}/" not in words}
    assert not missing, f"the Dockerfile never copies {sorted(missing)}"

    ignored = {
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not required & ignored, f".dockerignore excludes {sorted(required & ignored)}"
    for local_state in (".venv", ".cache", ".local", ".git", "test-artifacts"):
        assert local_state in ignored, f".dockerignore must exclude {local_state}"
    assert {"__pycache__", "**/__pycache__"} & ignored


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(not docker_compose_available(), reason="docker compose is not installed")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
