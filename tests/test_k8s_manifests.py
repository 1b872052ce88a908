"""Checks of the Kubernetes manifests under deploy/k8s, offline: no cluster, no kubectl.

1. Render the kustomizations (base/, overlays/sasl-scram/) in Python. The renderer does
   what these kustomization.yaml files use — resources, namespace, images, and strategic
   merge patches (with an optional target) — and fails on any other key, so a new
   kustomize feature is added here too. Where `kubectl` is installed, its `kubectl
   kustomize` output is compared with ours.
2. Validate every rendered object (and the Secret template) against the Kubernetes
   OpenAPI schemas bundled in the `kubernetes-validate` package (strict: unknown fields
   fail), for the oldest and the newest Kubernetes version we claim.
3. Check the invariants that matter to the services, derived from their code: the
   settings classes (which variables are required, which are secret), the Dockerfile's
   uid, the ports, the probes' paths, the consumer groups in docs/scaling.md.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from ops.prometheus import (
    KUBERNETES_CONFIG,
    PROMETHEUS_CONFIG,
    LocalPrometheus,
    prometheus_binary,
    with_file_discovery,
)
from ops.stack import wait_for
from services.meetings import bootstrap as meetings_bootstrap
from services.notifications import bootstrap as notifications_bootstrap
from services.reports import bootstrap as reports_bootstrap
from shared.settings import KafkaSettings, ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "sasl-scram"
REBUILD_JOB = K8S / "jobs" / "reports-rebuild"
SECRET_TEMPLATE = K8S / "secret.template.yaml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
SCALING_DOC = ROOT / "docs" / "scaling.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "chibo-overview.json"

NAMESPACE = "chibo"
CONFIG_MAP = "chibo-config"
SECRET = "chibo-secrets"
# The oldest Kubernetes minor we support (docs/scaling.md) and the newest with bundled schemas.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())

SERVICES: dict[str, tuple[type[ServiceSettings], Callable[..., Any]]] = {
    "meetings": (meetings_bootstrap.MeetingsSettings, meetings_bootstrap.build_app),
    "reports": (reports_bootstrap.ReportsSettings, reports_bootstrap.build_app),
    "notifications": (
        notifications_bootstrap.NotificationsSettings,
        notifications_bootstrap.build_app,
    ),
}
CONSUMER_GROUPS = {
    meetings_bootstrap.INTAKE_GROUP,
    reports_bootstrap.CONSUMER_GROUP,
    notifications_bootstrap.CONSUMER_GROUP,
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
# A default that only fits the local stack must be overridden in a cluster.
LOCAL_ONLY_DEFAULT = re.compile(r"127\.0\.0\.1|localhost|\.local\b")


# --- a small kustomize ----------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def strategic_merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for what we patch: maps merge key by key, lists
    of named items merge by name (new items first), anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if _named_list(base) and _named_list(patch):
        by_name = {item["name"]: item for item in patch}
        kept = [
            strategic_merge(i, by_name.pop(i["name"])) if i["name"] in by_name else i for i in base
        ]
        return [copy.deepcopy(i) for i in patch if i["name"] in by_name] + kept
    return copy.deepcopy(patch)


def _matches(obj: dict[str, Any], patch: dict[str, Any], target: dict[str, Any] | None) -> bool:
    if target is None:
        return obj["kind"] == patch["kind"] and obj["metadata"]["name"] == patch["metadata"]["name"]
    assert set(target) <= {"kind", "name", "labelSelector"}, f"unsupported patch target {target}"
    if "kind" in target and obj["kind"] != target["kind"]:
        return False
    if "name" in target and obj["metadata"]["name"] != target["name"]:
        return False
    labels = obj["metadata"].get("labels", {})
    for term in filter(None, target.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize directory`, for the features our kustomizations use."""
    kustomization = load_documents(directory / "kustomization.yaml")[0]
    supported = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
    unsupported = set(kustomization) - supported
    assert not unsupported, f"{directory}: teach render() about {sorted(unsupported)}"

    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects += render(path) if path.is_dir() else load_documents(path)

    for spec in kustomization.get("patches", []):
        assert set(spec) <= {"path", "target"}, f"unsupported patch {spec}"
        patch = load_documents(directory / spec["path"])[0]
        hits = [i for i, obj in enumerate(objects) if _matches(obj, patch, spec.get("target"))]
        assert hits, f"patch {spec['path']} matches nothing"
        for i in hits:
            name = objects[i]["metadata"]["name"]
            objects[i] = strategic_merge(objects[i], patch)
            objects[i]["metadata"]["name"] = name  # a targeted patch's name is a placeholder

    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]

    for image in kustomization.get("images", []):
        for obj in objects:
            pod = obj.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    new_tag = image.get("newTag", tag)
                    new_name = image.get("newName", name)
                    container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
    return objects


RENDERS = {"base": BASE, "sasl-scram": OVERLAY}


@pytest.fixture(scope="module", params=sorted(RENDERS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(RENDERS[request.param])


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def config_map(objects: list[dict[str, Any]]) -> dict[str, str]:
    data = of_kind(objects, "ConfigMap")[CONFIG_MAP]["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    return data


def secret_template() -> dict[str, Any]:
    (doc,) = load_documents(SECRET_TEMPLATE)
    return doc


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    return app


# --- settings, as the services read them ----------------------------------------------------


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Field name -> environment variable, for the scalar fields of a settings class."""
    prefix = cls.model_config.get("env_prefix", "")
    return {
        name: f"{prefix}{name}".upper()
        for name, field in cls.model_fields.items()
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings))
    }


def _dummy(annotation: Any) -> Any:
    args = set(typing.get_args(annotation)) - {type(None)}
    if args & {str, SecretStr}:
        return "x" * 48
    if Path in args:
        return Path("/tmp")
    return None


def required_env(service: str) -> set[str]:
    """Variables without a default, and None defaults the service refuses to start without
    (found by building its app, which does no I/O, with that one setting missing)."""
    cls, build_app = SERVICES[service]
    names = env_names(cls)
    required = {names[n] for n, f in cls.model_fields.items() if n in names and f.is_required()}
    optional = {n: _dummy(f.annotation) for n, f in cls.model_fields.items() if f.default is None}
    filled = {n: v for n, v in optional.items() if v is not None}
    build_app(cls(**filled))  # everything given: it must build
    for name in filled:
        try:
            build_app(cls(**{**filled, name: None}))
        except SystemExit:
            required.add(names[name])
    required |= {
        names[n]
        for n, f in cls.model_fields.items()
        if n in names and isinstance(f.default, str) and LOCAL_ONLY_DEFAULT.search(f.default)
    }
    kafka = env_names(KafkaSettings)
    required |= {
        kafka[n]
        for n, f in KafkaSettings.model_fields.items()
        if f.is_required() or (isinstance(f.default, str) and LOCAL_ONLY_DEFAULT.search(f.default))
    }
    return required


def known_env() -> set[str]:
    names = set(env_names(KafkaSettings).values())
    for cls, _ in SERVICES.values():
        names |= set(env_names(cls).values())
    return names


def secret_env() -> set[str]:
    """Variables that hold secrets: every SecretStr field, and DATABASE_URL (its password)."""
    names = {"DATABASE_URL"}
    classes: list[type[BaseSettings]] = [KafkaSettings, *(c for c, _ in SERVICES.values())]
    for cls in classes:
        for name, env in env_names(cls).items():
            if SecretStr in {
                cls.model_fields[name].annotation,
                *typing.get_args(cls.model_fields[name].annotation),
            }:
                names.add(env)
    return names


def container_env(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """The environment the container gets: envFrom in order, then env on top."""
    sources = {
        ("configMapRef", CONFIG_MAP): config_map(objects),
        ("secretRef", SECRET): secret_template()["stringData"],
    }
    env: dict[str, str] = {}
    app = container(deployment)
    for ref in app.get("envFrom", []):
        ((kind, target),) = ref.items()
        env.update(sources[(kind, target["name"])])
    for var in app.get("env", []):
        env[var["name"]] = var["value"]
    return env


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in known_env():
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


# --- 1. rendering ---------------------------------------------------------------------------


def test_the_top_level_kustomization_is_the_base() -> None:
    assert render(K8S) == render(BASE)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if _named_list(value):
        return sorted((_canonical(i) for i in value), key=lambda i: i["name"])
    if isinstance(value, list):
        return [_canonical(i) for i in value]
    return value


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize(
    "directory",
    [K8S, BASE, OVERLAY, REBUILD_JOB],
    ids=["top", "base", "sasl-scram", "reports-rebuild"],
)
def test_our_rendering_matches_kubectl_kustomize(directory: Path) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    theirs = [doc for doc in yaml.safe_load_all(out) if doc]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(_canonical, theirs), key=key) == sorted(
        map(_canonical, render(directory)), key=key
    )


# --- 2. schemas -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schema(
    rendered: tuple[str, list[dict[str, Any]]], version: str
) -> None:
    _, objects = rendered
    for obj in [*objects, secret_template()]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}")


def test_the_expected_objects_are_there(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    assert set(of_kind(objects, "Namespace")) == {NAMESPACE}
    assert set(of_kind(objects, "ConfigMap")) == {CONFIG_MAP}
    assert not of_kind(objects, "Secret"), (
        "real secrets are created by hand, never applied from git"
    )
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        assert set(of_kind(objects, kind)) == set(SERVICES), kind
    assert of_kind(objects, "NetworkPolicy")
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


# --- 3. invariants --------------------------------------------------------------------------


def image_uid() -> int:
    match = re.search(r"^USER\s+(\d+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "the Dockerfile sets a numeric USER"
    return int(match.group(1))


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_deployment_shape(rendered: tuple[str, list[dict[str, Any]]], service: str) -> None:
    _, objects = rendered
    deployment = of_kind(objects, "Deployment")[service]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    app = container(deployment)
    env = container_env(objects, deployment)
    port = int(env["HTTP_PORT"])

    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert app["command"] == ["python", "-m", f"services.{service}"]
    assert (ROOT / "services" / service / "__main__.py").is_file()
    assert app["image"].startswith("registry.example.org/chibo:")
    assert env["SERVICE_NAME"] == service

    # Ports: one named port, the one the service binds.
    assert [(p["name"], p["containerPort"]) for p in app["ports"]] == [("http", port)]
    assert port == SERVICES[service][0].model_fields["http_port"].default

    # Probes: liveness and start-up on /health, readiness on /ready, on the service's port.
    named = {p["name"]: p["containerPort"] for p in app["ports"]}
    for probe, path in (
        ("startupProbe", "/health"),
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
    ):
        get = app[probe]["httpGet"]
        assert get["path"] == path, probe
        assert named.get(get["port"], get["port"]) == port, probe
    # Start-up can wait on the migration lock: the start-up budget is longer than liveness'.
    startup = app["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120

    # Resources: requests and limits for CPU and memory, limits at least the requests.
    resources = app["resources"]
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"] and kind in resources["limits"], kind
    mem = {k: int(resources[k]["memory"].removesuffix("Mi")) for k in ("requests", "limits")}
    assert 128 <= mem["requests"] <= mem["limits"]

    # Non-root with the image's uid, read-only root, /tmp writable.
    uid = image_uid()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    sc = app["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc.get("runAsUser", uid) == uid
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = [m for m in app["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]]

    # Config from the ConfigMap and the Secret.
    refs = [next(iter(r.items())) for r in app["envFrom"]]
    assert ("configMapRef", {"name": CONFIG_MAP}) in refs
    assert ("secretRef", {"name": SECRET}) in refs

    # Replicas spread over nodes.
    assert pod.get("topologySpreadConstraints") or pod.get("affinity", {}).get("podAntiAffinity")
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    for constraint in pod.get("topologySpreadConstraints", []):
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_and_disruption_budget(
    rendered: tuple[str, list[dict[str, Any]]], service: str
) -> None:
    _, objects = rendered
    deployment = of_kind(objects, "Deployment")[service]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    port = int(container_env(objects, deployment)["HTTP_PORT"])

    svc = of_kind(objects, "Service")[service]
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert svc["spec"]["selector"].items() <= labels.items()
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(port, "http")]
    annotations = svc["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"

    pdb = of_kind(objects, "PodDisruptionBudget")[service]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    budget = pdb["spec"].get("maxUnavailable", 0)
    assert budget == 1 or pdb["spec"].get("minAvailable") == 1
    assert deployment["spec"]["replicas"] > 1  # a budget of one pod needs at least two


# --- Prometheus in the cluster: the discovered targets get the chibo-<service> jobs --------


def _label_name(text: str) -> str:
    """Kubernetes discovery's label names: every character not allowed becomes ``_``."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", text)


def discovered_endpoints(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `kubernetes_sd_configs` (role endpoints) discovers for the rendered Services:
    one target per replica and Service port, labelled as Prometheus labels them
    (docs: kubernetes_sd_config, role endpoints), in file discovery's format. Plus a
    Service of something else in the namespace that asks to be scraped too."""
    groups = []
    deployments = of_kind(objects, "Deployment")
    services = list(of_kind(objects, "Service").values())
    stranger = {
        "metadata": {
            "name": "kafka-ui",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": "kafka-ui"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9000"},
        },
        "spec": {"ports": [{"name": "http", "port": 9000, "targetPort": 9000}]},
    }
    for n, svc in enumerate([*services, stranger]):
        meta = svc["metadata"]
        labels = {"__meta_kubernetes_namespace": meta["namespace"]}
        labels["__meta_kubernetes_service_name"] = meta["name"]
        for key, value in meta.get("labels", {}).items():
            labels[f"__meta_kubernetes_service_label_{_label_name(key)}"] = value
            labels[f"__meta_kubernetes_service_labelpresent_{_label_name(key)}"] = "true"
        for key, value in meta.get("annotations", {}).items():
            labels[f"__meta_kubernetes_service_annotation_{_label_name(key)}"] = value
            labels[f"__meta_kubernetes_service_annotationpresent_{_label_name(key)}"] = "true"
        deployment = deployments.get(meta["name"])
        replicas = deployment["spec"]["replicas"] if deployment else 1
        ports = (
            {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
            if (deployment)
            else {}
        )
        for port in svc["spec"]["ports"]:
            target_port = ports.get(port["targetPort"], port["targetPort"])
            for replica in range(replicas):
                pod = f"{meta['name']}-7d9f8-{replica}"
                groups.append(
                    {
                        # Loopback addresses nobody listens on: a refused scrape, at once.
                        "targets": [f"127.0.{n + 1}.{replica + 1}:{target_port}"],
                        "labels": {
                            **labels,
                            "__meta_kubernetes_endpoint_port_name": port["name"],
                            "__meta_kubernetes_endpoint_ready": "true",
                            "__meta_kubernetes_pod_name": pod,
                        },
                    }
                )
    return groups


def test_prometheus_in_the_cluster_gives_each_service_its_chibo_job(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """deploy/prometheus/kubernetes.yml, applied by a real Prometheus to the targets its
    Kubernetes discovery would find for the rendered manifests: each replica of each
    service is scraped at its annotated port and path, as job chibo-<service> with label
    service=<service> (the jobs of prometheus.yml, which the dashboard and the rules
    select), and nothing else in the namespace is."""
    if prometheus_binary() is None:
        pytest.skip("the prometheus binary is missing (Debian package prometheus)")
    _, objects = rendered
    config = yaml.safe_load(KUBERNETES_CONFIG.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    (discovery,) = job["kubernetes_sd_configs"]
    assert discovery["role"] == "endpoints"
    assert discovery["namespaces"]["names"] == [NAMESPACE]

    discovered = discovered_endpoints(objects)
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps(discovered))
    config = with_file_discovery(config, [str(targets)]) | {"rule_files": []}
    found: dict[str, Any] = {}
    with LocalPrometheus(tmp_path / "prometheus", config) as prometheus:

        def all_listed() -> bool:
            found.update(prometheus.api("targets", state="any"))
            listed = len(found["activeTargets"]) + len(found["droppedTargets"])
            return listed == len(discovered)

        wait_for(all_listed, part="prometheus targets", timeout_s=30, log=prometheus.log_path)

    deployments = of_kind(objects, "Deployment")
    expected = {
        (f"chibo-{name}", name, f"{name}-7d9f8-{i}", container_env(objects, d)["HTTP_PORT"])
        for name, d in deployments.items()
        for i in range(d["spec"]["replicas"])
    }
    active = {
        (
            t["labels"]["job"],
            t["labels"]["service"],
            t["labels"]["instance"],
            t["scrapeUrl"].rsplit(":", 1)[1].removesuffix("/metrics"),
        )
        for t in found["activeTargets"]
    }
    assert active == expected
    for t in found["activeTargets"]:
        assert t["scrapeUrl"].endswith("/metrics"), t["scrapeUrl"]
        assert t["labels"]["namespace"] == NAMESPACE
    dropped = {
        t["discoveredLabels"]["__meta_kubernetes_service_name"] for t in found["droppedTargets"]
    }
    assert dropped == {"kafka-ui"}

    # The same jobs as in Docker Compose and locally, and the dashboard selects them.
    compose_jobs = {
        j["job_name"]
        for j in yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["scrape_configs"]
    }
    assert {job for job, *_ in active} == compose_jobs
    exprs = [
        target["expr"]
        for panel in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
        for target in panel.get("targets", [])
    ]
    selectors = {m for expr in exprs for m in re.findall(r'job=~"([^"]+)"', expr)}
    assert selectors, "the dashboard selects no job"
    for selector in selectors:
        assert all(re.fullmatch(selector, job) for job in compose_jobs), selector


def test_network_policy_allows_the_http_port(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    for policy in of_kind(objects, "NetworkPolicy").values():
        selector = policy["spec"]["podSelector"]["matchLabels"]
        for deployment in of_kind(objects, "Deployment").values():
            assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
            assert "http" in {p["name"] for p in container(deployment)["ports"]}
        ports = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
        assert ports == ["http"]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_config_and_secret_provide_every_required_variable(
    rendered: tuple[str, list[dict[str, Any]]], service: str
) -> None:
    _, objects = rendered
    env = container_env(objects, of_kind(objects, "Deployment")[service])
    missing = required_env(service) - set(env)
    assert not missing, f"{service} needs {sorted(missing)}"
    if service == "meetings":
        assert "AUTH_JWT_SECRET" in required_env(
            service
        )  # derived, not listed: check the derivation


def test_config_map_holds_known_non_secret_settings_only(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    data = config_map(objects)
    unknown = set(data) - known_env()
    assert not unknown, f"no service reads {sorted(unknown)}: a typo?"
    assert not set(data) & secret_env(), "secrets belong in the Secret"
    assert all(v != "" for v in data.values()), "an empty value is not 'unset': leave the key out"
    placeholders = set(secret_template()["stringData"].values())
    for key, value in data.items():
        assert value not in placeholders, key
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"{key} holds a password"
    assert data["KAFKA_CREATE_TOPICS"] == "false"
    assert data["HTTP_HOST"] == "0.0.0.0"
    for deployment in of_kind(objects, "Deployment").values():
        assert not {e["name"] for e in container(deployment).get("env", [])} & secret_env()


def test_secret_template_is_a_clearly_marked_placeholder() -> None:
    secret = secret_template()
    assert secret["metadata"]["name"] == SECRET
    assert secret["metadata"]["namespace"] == NAMESPACE
    data = secret["stringData"]
    assert set(data) == secret_env(), "the template lists exactly the secret settings"
    assert all("REPLACE_ME" in v for v in data.values())
    # Fail safe: meetings refuses to start with the placeholder signing key.
    assert len(data["AUTH_JWT_SECRET"]) < 32
    # Notifications mints its look-up tokens; a long-lived one would expire in service.
    assert "CONTACTS_TOKEN" not in data
    text = SECRET_TEMPLATE.read_text(encoding="utf-8")
    assert "kubectl -n chibo create secret generic chibo-secrets" in text
    kustomizations = [p.read_text(encoding="utf-8") for p in K8S.rglob("kustomization.yaml")]
    assert not any("secret.template.yaml" in k.split("resources:")[-1] for k in kustomizations)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_base_settings_parse_and_the_app_builds(
    clean_env: pytest.MonkeyPatch, service: str
) -> None:
    """The rendered environment read by the service's own settings class: types parse, the
    port and name come out right, and the app builds once the placeholders are replaced."""
    objects = render(BASE)
    env = container_env(objects, of_kind(objects, "Deployment")[service])
    cls, build_app = SERVICES[service]
    for key, value in env.items():
        clean_env.setenv(key, value)
    settings = cls()
    assert settings.service_name == service
    assert settings.http_host == "0.0.0.0"
    assert (
        settings.http_port
        == container(of_kind(objects, "Deployment")[service])["ports"][0]["containerPort"]
    )
    assert settings.kafka.create_topics is False
    assert settings.kafka.security_protocol == "PLAINTEXT"
    if service == "meetings":
        with pytest.raises(SystemExit):  # the placeholder key is refused
            build_app(settings)
    if service == "notifications":
        with pytest.raises(SystemExit, match="REPLACE_ME"):  # any placeholder it would use
            build_app(settings)
    for key, value in env.items():
        if "REPLACE_ME" in value:
            clean_env.setenv(key, "y" * 48)
    build_app(cls())


def test_the_overlay_speaks_sasl_ssl_scram_with_a_mounted_ca(clean_env: pytest.MonkeyPatch) -> None:
    objects = render(OVERLAY)
    data = config_map(objects)
    assert data["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert data["KAFKA_SASL_USERNAME"]
    cafile = Path(data["KAFKA_SSL_CAFILE"])
    for name, deployment in of_kind(objects, "Deployment").items():
        env = container_env(objects, deployment)
        for key, value in env.items():
            clean_env.setenv(key, value)
        kafka = SERVICES[name][0]().kafka
        assert kafka.security_protocol == "SASL_SSL" and kafka.sasl_mechanism == "SCRAM-SHA-512"
        assert kafka.sasl_password is not None  # from the Secret
        # The CA file lies in a read-only mount of a Secret volume that holds it.
        app, pod = container(deployment), deployment["spec"]["template"]["spec"]
        mounts = [m for m in app["volumeMounts"] if cafile.parent == Path(m["mountPath"])]
        assert len(mounts) == 1 and mounts[0].get("readOnly") is True, name
        volume = {v["name"]: v for v in pod["volumes"]}[mounts[0]["name"]]
        assert cafile.name in [item["path"] for item in volume["secret"]["items"]]
        assert volume["secret"]["secretName"] == "chibo-kafka-ca"


def test_base_and_overlay_differ_only_in_kafka_security() -> None:
    base, overlay = render(BASE), render(OVERLAY)
    base_cm, overlay_cm = config_map(base), config_map(overlay)
    changed = {k for k in base_cm.keys() | overlay_cm.keys() if base_cm.get(k) != overlay_cm.get(k)}
    assert changed <= {k for k in known_env() if k.startswith("KAFKA_")}


# --- the reports rebuild Job, run before a rollout -------------------------------------------


def test_the_reports_rebuild_job_is_valid_and_not_applied_with_the_services() -> None:
    objects = render(REBUILD_JOB)
    (job,) = objects
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == NAMESPACE
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    # Run by hand per release (a Job is immutable), never by `kubectl apply -k deploy/k8s`.
    assert not of_kind(render(K8S) + render(OVERLAY), "Job")
    base = of_kind(render(BASE), "Deployment")["reports"]
    (base_app,) = base["spec"]["template"]["spec"]["containers"]
    (app,) = job["spec"]["template"]["spec"]["containers"]
    assert app["image"] == base_app["image"]  # the same image pin as the services


def test_the_reports_rebuild_job_runs_the_cli_as_the_services_run(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """The CLI it names exists with those options, it reads the services' ConfigMap and
    Secret (so the same database and topics), non-root with the image's uid, and finds
    the Kafka CA where the SASL overlay's settings say."""
    from typer.testing import CliRunner

    from ops.cli import app as cli

    (job,) = render(REBUILD_JOB)
    pod = job["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    assert pod["restartPolicy"] == "Never"
    program, *args = app["command"]
    assert program == "chibo"
    assert 'chibo = "ops.cli:app"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert args[:2] == ["reports", "rebuild"] and {"--migrate", "--if-outdated"} <= set(args)
    usage = CliRunner().invoke(cli, [*args, "--help"], env={"COLUMNS": "200"})
    assert usage.exit_code == 0, usage.output
    for option in args[2:]:
        assert option in usage.output, option
    refs = [next(iter(r.items())) for r in app["envFrom"]]
    assert refs == [("configMapRef", {"name": CONFIG_MAP}), ("secretRef", {"name": SECRET})]

    uid = image_uid()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert app["securityContext"]["readOnlyRootFilesystem"] is True
    assert app["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in app["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]

    cafile = Path(config_map(render(OVERLAY))["KAFKA_SSL_CAFILE"])
    ca = volumes[mounts[str(cafile.parent)]]["secret"]
    assert ca["secretName"] == "chibo-kafka-ca" and ca["optional"] is True  # base has none
    assert cafile.name in [item["path"] for item in ca["items"]]


# --- docs -----------------------------------------------------------------------------------


def test_scaling_doc_names_the_groups_topics_and_partitions() -> None:
    text = SCALING_DOC.read_text(encoding="utf-8")
    for group in CONSUMER_GROUPS:
        assert f"`{group}`" in text, group
    # Each kafka-topics.sh command, with its backslash-continued lines.
    commands = re.findall(r"kafka-topics\.sh(?:[^\n]*\\\n)*[^\n]*", text)
    kafka = KafkaSettings.model_construct()  # the defaults, whatever the environment says
    partitions = config_map(render(BASE))["KAFKA_PARTITIONS"]
    for topic in (
        kafka.events_topic,
        kafka.commands_topic,
        kafka.dlq_topic,
        kafka.events_dlq_topic,
    ):
        (command,) = [
            c for c in commands if re.search(rf"--create --topic {re.escape(topic)}(\s|$)", c)
        ]
        assert "--replication-factor 3" in command, topic
        assert "min.insync.replicas=2" in command, topic
        if topic in (kafka.events_topic, kafka.commands_topic):
            assert f"--partitions {partitions}" in command, topic
