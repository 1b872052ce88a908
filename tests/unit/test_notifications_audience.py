"""Which notices still hold when they come to be sent, which channels a person gets, and
the settings that decide who is told (pure rules and the preferences door)."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.notifications.adapters.templating import TemplateRenderer
from services.notifications.bootstrap import NotificationsSettings
from services.notifications.domain.notices import choose_channels, outdated_reason
from services.notifications.entrypoints.http import preferences_router
from shared.auth import Role, TokenService
from shared.clock import LOCAL_TZ
from shared.contract.events import MeetingKind, MeetingScheduled
from shared.http import install_error_handlers

START = datetime(2026, 12, 3, 19, 30, tzinfo=LOCAL_TZ)
BEFORE = START - timedelta(days=2)


@pytest.mark.parametrize(
    "trigger", ["meeting_scheduled", "meeting_rescheduled", "meeting_reminder"]
)
def test_a_waiting_meeting_notice_is_superseded_by_a_move_or_a_cancellation(trigger: str) -> None:
    assert outdated_reason(trigger, START, "scheduled", START, BEFORE) is None
    moved = START + timedelta(days=1)
    assert outdated_reason(trigger, START, "scheduled", moved, BEFORE) == "superseded"
    assert outdated_reason(trigger, START, "cancelled", START, BEFORE) == "superseded"
    assert outdated_reason(trigger, START, "opened", START, BEFORE) == "stale"
    # The stale rule at send time: held past the start (quiet hours, a retry, a resend).
    assert outdated_reason(trigger, START, "scheduled", START, START) == "stale"


def test_a_cancellation_is_only_stale_once_the_meeting_time_has_passed() -> None:
    assert outdated_reason("meeting_cancelled", START, "cancelled", START, BEFORE) is None
    assert outdated_reason("meeting_cancelled", START, "cancelled", START, START) == "stale"


def test_other_notices_and_notices_without_a_start_are_never_withdrawn() -> None:
    assert outdated_reason("petition_raised", START, "cancelled", START, START) is None
    assert outdated_reason("meeting_scheduled", None, "cancelled", START, START) is None


DEADLINE = datetime(2026, 12, 10, 17, 0, tzinfo=LOCAL_TZ)
WARNED = DEADLINE - timedelta(hours=4)  # when the "còn khoảng 4 giờ" warning was made


def test_a_deadline_warning_still_open_goes_out() -> None:
    assert outdated_reason("petition_deadline", DEADLINE, "open", DEADLINE, WARNED) is None
    # A retry an hour before the deadline: still news.
    before = DEADLINE - timedelta(hours=1)
    assert outdated_reason("petition_deadline", DEADLINE, "open", DEADLINE, before) is None


def test_a_deadline_warning_is_superseded_once_the_deadline_is_no_longer_open() -> None:
    # Resolved while it waited: nothing left to warn of.
    assert outdated_reason("petition_deadline", DEADLINE, "resolved", DEADLINE, WARNED) == (
        "superseded"
    )
    # Escalated (another holder, another deadline), or reopened with another deadline.
    later = DEADLINE + timedelta(days=15)
    assert outdated_reason("petition_deadline", DEADLINE, "open", later, WARNED) == "superseded"
    # Superseded even once both deadlines have passed: the change came first.
    after = later + timedelta(hours=1)
    assert outdated_reason("petition_deadline", DEADLINE, "open", later, after) == "superseded"


def test_a_deadline_warning_is_stale_once_its_deadline_has_passed() -> None:
    assert outdated_reason("petition_deadline", DEADLINE, "open", DEADLINE, DEADLINE) == "stale"
    later = DEADLINE + timedelta(hours=2)  # a retry, or a resend, after the deadline
    assert outdated_reason("petition_deadline", DEADLINE, "open", DEADLINE, later) == "stale"
    # Marked overdue by the petitions service (its clock ahead of ours): passed too.
    assert outdated_reason("petition_deadline", DEADLINE, "overdue", DEADLINE, WARNED) == "stale"


def test_a_deadline_warning_without_its_deadline_is_judged_by_the_petition_status() -> None:
    """Warnings recorded before deliveries kept their deadline (migration 007)."""
    assert outdated_reason("petition_deadline", None, "open", DEADLINE, WARNED) is None
    assert outdated_reason("petition_deadline", None, "resolved", DEADLINE, WARNED) == (
        "superseded"
    )
    assert outdated_reason("petition_deadline", None, "overdue", DEADLINE, WARNED) == "stale"
    # A petition the directory does not know: only the deadline it warns of can judge it.
    assert outdated_reason("petition_deadline", DEADLINE, None, None, WARNED) is None
    assert outdated_reason("petition_deadline", DEADLINE, None, None, DEADLINE) == "stale"


@pytest.mark.parametrize(
    "trigger", ["petition_raised", "petition_escalated", "petition_resolved", "petition_reopened"]
)
def test_petition_history_is_never_withdrawn(trigger: str) -> None:
    """What happened to a petition stays true after it changes again (docs/notifications.md,
    "The stale rule")."""
    later = DEADLINE + timedelta(days=15)
    assert outdated_reason(trigger, None, "resolved", later, later) is None
    assert outdated_reason(trigger, DEADLINE, "resolved", later, later) is None


def test_a_preference_never_silences_a_person() -> None:
    enabled, default = ("email", "log"), ("email",)
    assert choose_channels(("webhook", "log"), enabled, default) == (["log"], ["webhook"])
    # Nothing of theirs is configured: the default channels stand in.
    assert choose_channels(("webhook",), enabled, default) == (["email"], ["webhook"])
    assert choose_channels(("email",), enabled, default) == (["email"], [])


def test_report_late_levels_and_the_mailbox_come_from_the_settings() -> None:
    config = NotificationsSettings(cell_mailbox_pattern="chi-bo.{cell_id}@chibo.local").config()
    assert config.report_levels == {"ward", "commune"}  # as REPORT_WARD_LEVELS in reports
    assert config.cell_mailbox("to-01", "nam-ngan") == "mailbox:chi-bo.to-01@chibo.local"
    assert NotificationsSettings(cell_mailbox_pattern="").config().cell_mailbox("a", "b") is None
    # Off unless a deployment names its mail domain (no mail to chibo.local by default).
    assert NotificationsSettings().config().cell_mailbox("a", "b") is None
    three = NotificationsSettings(report_ward_levels="ward, commune,district").config()
    assert three.report_levels == {"ward", "commune", "district"}


def test_default_channels_the_deployment_lacks_fail_at_start() -> None:
    with pytest.raises(ValueError, match="NOTIFY_DEFAULT_CHANNELS"):
        NotificationsSettings(notify_default_channels="webhook").config()  # no WEBHOOK_URL
    with pytest.raises(ValueError, match="NOTIFY_DEFAULT_CHANNELS"):
        NotificationsSettings(notify_channels="log", notify_default_channels="email").config()


async def test_a_preference_for_a_channel_not_configured_is_refused() -> None:
    secret = "x" * 40
    app = FastAPI()
    install_error_handlers(app)
    app.state.tokens = TokenService(SecretStr(secret))
    app.include_router(preferences_router(("email",), ("email", "log")))
    token = app.state.tokens.issue("p1", Role.MEMBER, "cell", "to-01")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.put(
            "/v1/people/p1/preferences",
            json={"channels": ["email", "webhook"]},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "channel_not_configured"
    assert body["details"] == {"unavailable": ["webhook"], "available": ["email", "log"]}
    assert "chưa được cấu hình" in body["message_vi"]


def test_the_schedule_notice_says_where_as_well_as_when() -> None:
    meeting = MeetingScheduled(
        meeting_id="m1",
        ward_id="nam-ngan",
        cell_id="nam-ngan.to-01",
        kind=MeetingKind.REGULAR,
        scheduled_start=START,
        location="Nhà văn hóa tổ 1",
    )
    message = TemplateRenderer().render("meeting_scheduled", {"meeting": meeting})
    assert "vào lúc 19:30 ngày 03/12/2026 tại Nhà văn hóa tổ 1." in message.text
    assert "tại <strong>Nhà văn hóa tổ 1</strong>" in message.html
    unplaced = TemplateRenderer().render(
        "meeting_scheduled", {"meeting": meeting.model_copy(update={"location": None})}
    )
    assert "vào lúc 19:30 ngày 03/12/2026." in unplaced.text
