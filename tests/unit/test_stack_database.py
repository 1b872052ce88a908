"""The local stack's database: its own embedded PostgreSQL unless CHIBO_DATABASE_URL names
another one on this machine (or CHIBO_ALLOW_REMOTE_DATABASE=1), and never a deployment's
DATABASE_URL, which a shell may still export for the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.stack import Stack, StackSettings, StartupError, database_hosts, is_local_host
from ops.target import Target

PRODUCTION = "postgresql://chibo:secret@postgres.example.org:5432/chibo"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATABASE_URL", "CHIBO_DATABASE_URL", "CHIBO_ALLOW_REMOTE_DATABASE", "PGHOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHIBO_POSTGRES_PORT", "55999")
    monkeypatch.setenv("CHIBO_ROOT", str(tmp_path))  # its token key goes there


def test_an_exported_database_url_is_not_the_stacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", PRODUCTION)
    stack = Stack(StackSettings())
    assert stack.settings.database_url is None
    assert stack.database_url == "postgresql://postgres@127.0.0.1:55999/chibo"
    # What the services it starts are given.
    assert stack.service_env("notifications")["DATABASE_URL"] == stack.database_url


def test_the_cli_still_takes_database_url_for_a_deployment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", PRODUCTION)
    assert Target.from_env().database_url == PRODUCTION
    monkeypatch.delenv("DATABASE_URL")
    assert Target.from_env().database_url == "postgresql://postgres@127.0.0.1:55999/chibo"


def test_a_local_chibo_database_url_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    local = "postgresql://me@localhost:5432/chibo_dev"
    monkeypatch.setenv("CHIBO_DATABASE_URL", local)
    stack = Stack(StackSettings())
    assert stack.database_url == local
    stack.start_postgres()  # nothing to start, nothing refused
    assert stack.service_env("meetings")["DATABASE_URL"] == local


def test_a_remote_chibo_database_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIBO_DATABASE_URL", PRODUCTION)
    stack = Stack(StackSettings())
    with pytest.raises(StartupError, match=r"postgres\.example\.org") as refused:
        stack.start_postgres()
    assert "CHIBO_ALLOW_REMOTE_DATABASE=1" in str(refused.value)
    assert "secret" not in str(refused.value)
    with pytest.raises(StartupError):
        stack.service_env("meetings")
    with pytest.raises(StartupError):
        stack.up()  # refused before any part starts
    assert not any(stack.status().values())


def test_a_remote_chibo_database_url_is_taken_with_the_opt_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHIBO_DATABASE_URL", PRODUCTION)
    monkeypatch.setenv("CHIBO_ALLOW_REMOTE_DATABASE", "1")
    assert Stack(StackSettings()).database_url == PRODUCTION


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("postgresql://u:p@db.example.org:5432/x", ["db.example.org"]),
        ("postgresql://u@[::1]:5432/x", ["::1"]),
        ("postgresql://u@127.0.0.1,10.0.0.5:5433/x", ["127.0.0.1", "10.0.0.5"]),
        ("postgresql://u@/x?host=/var/run/postgresql", ["/var/run/postgresql"]),
        ("postgresql:///x?host=db.example.org", ["db.example.org"]),
        ("postgresql:///x", []),
    ],
)
def test_database_hosts(url: str, hosts: list[str]) -> None:
    assert database_hosts(url) == hosts


def test_no_host_means_pghost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "db.example.org")
    assert database_hosts("postgresql:///x") == ["db.example.org"]


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("::1", True),
        ("/tmp", True),
        ("10.0.0.5", False),
        ("0.0.0.0", False),
        ("db.example.org", False),
        ("localhost.example.org", False),
    ],
)
def test_is_local_host(host: str, local: bool) -> None:
    assert is_local_host(host) is local


def test_a_deployments_webhook_mail_and_kafka_credentials_stay_out_of_the_local_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "WEBHOOK_URL": "https://ward-app.example.org/hook",
        "WEBHOOK_SECRET": "s",
        "SMTP_USERNAME": "chibo",
        "SMTP_PASSWORD": "p",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_PASSWORD": "k",
        "KAFKA_SSL_CAFILE": "/etc/ca.pem",
        "DB_POOL_MAX": "7",  # tuning is passed on
    }.items():
        monkeypatch.setenv(name, value)
    env = Stack(StackSettings()).service_env("notifications")
    assert (
        not {
            "WEBHOOK_URL",
            "WEBHOOK_SECRET",
            "SMTP_USERNAME",
            "SMTP_PASSWORD",
            "KAFKA_SECURITY_PROTOCOL",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_SSL_CAFILE",
        }
        & env.keys()
    )
    assert env["DB_POOL_MAX"] == "7"
    assert env["SMTP_HOST"] == "127.0.0.1"
