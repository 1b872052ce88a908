"""The notifications service's start-up checks and its retry arithmetic (pure parts; the
delivery itself is tested on the real stack in tests/integration/test_notifications_retry.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services.notifications.adapters.contacts import ContactsClient
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.bootstrap import NotificationsSettings, build_app
from services.notifications.domain.notices import meeting_check_at
from services.notifications.service_layer.dispatcher import Dispatcher
from shared.clock import LOCAL_TZ, FrozenClock

SECRET = "s" * 48


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AUTH_JWT_SECRET",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
        "MEETING_MISSING_DAY",
        "CONTACTS_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("day", [0, 29, 31])
def test_a_meeting_missing_day_not_in_every_month_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, day: int
) -> None:
    monkeypatch.setenv("MEETING_MISSING_DAY", str(day))
    with pytest.raises(ValidationError, match="meeting_missing_day"):
        NotificationsSettings()


def test_days_1_to_28_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for day in (1, 28):
        monkeypatch.setenv("MEETING_MISSING_DAY", str(day))
        assert NotificationsSettings().config().meeting_missing_day == day


def test_a_stored_check_for_a_day_the_month_lacks_runs_on_its_last_day() -> None:
    # Timers armed before the limit carry due_day 30: February's check used to raise.
    assert meeting_check_at("2027-02", 30) == datetime(2027, 3, 1, tzinfo=LOCAL_TZ)
    assert meeting_check_at("2028-02", 31) == datetime(2028, 3, 1, tzinfo=LOCAL_TZ)
    assert meeting_check_at("2027-04", 31) == datetime(2027, 5, 1, tzinfo=LOCAL_TZ)
    assert meeting_check_at("2027-01", 10) == datetime(2027, 1, 11, tzinfo=LOCAL_TZ)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AUTH_JWT_SECRET": "REPLACE_ME" + "x" * 40}, "AUTH_JWT_SECRET"),
        ({"SMTP_USERNAME": "chibo", "SMTP_PASSWORD": "REPLACE_ME"}, "SMTP_PASSWORD"),
        (
            {"WEBHOOK_URL": "https://sms.example.org/hook", "WEBHOOK_SECRET": "REPLACE_ME"},
            "WEBHOOK_SECRET",
        ),
    ],
)
def test_a_secret_still_holding_the_template_placeholder_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit, match=named):
        build_app(NotificationsSettings())


def test_a_placeholder_the_service_does_not_use_is_no_reason_to_refuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    monkeypatch.setenv("SMTP_PASSWORD", "REPLACE_ME")  # no SMTP_USERNAME: not sent
    monkeypatch.setenv("CONTACTS_TOKEN", "REPLACE_ME")  # no longer read
    build_app(NotificationsSettings())


def test_without_a_signing_key_it_cannot_mint_look_up_tokens_and_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SystemExit, match="AUTH_JWT_SECRET"):
        build_app(NotificationsSettings())
    monkeypatch.setenv("AUTH_JWT_SECRET", "too-short")
    with pytest.raises(SystemExit, match="AUTH_JWT_SECRET"):
        build_app(NotificationsSettings())


def test_the_durable_backoff_doubles_up_to_the_cap() -> None:
    dispatcher = Dispatcher(
        None,  # type: ignore[arg-type]  # the arithmetic needs no database
        {},
        ContactsClient("http://127.0.0.1:9", token=lambda: "unused"),
        NotificationsMetrics(CollectorRegistry()),
        FrozenClock(datetime(2027, 1, 1, tzinfo=LOCAL_TZ)),
        asyncio.Event(),
        retry_base_s=2,
        retry_max_s=300,
    )
    assert [dispatcher.retry_in(n) for n in range(1, 12)] == [
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        300,
        300,
        300,
    ]
