"""Notifications end to end on the real stack: real Kafka and PostgreSQL, the real SMTP
sink, and a local HTTP receiver for the signed webhook. The services' clock is moved
through the offset file (into the day, so quiet hours do not hold notices back, and
forward by days to make reminders and deadline warnings fall due)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller

from ops.stack import PROJECT_ROOT, Stack, free_port
from shared.clock import LOCAL_TZ
from tests.integration.helpers import (
    UnitLadder,
    eventually,
    fetch,
    mails_to,
    metric_value,
    read_topic,
    text_of,
)

DAY = 86_400.0
SECRET = "webhook-secret-for-tests-0123456789"
EVENTS_TOPIC = "chibo.events.v1"


# -- a local webhook receiver (a real HTTP server on a free port) ------------------------


@dataclass
class Receiver:
    port: int
    received: list[dict[str, Any]] = field(default_factory=list)
    refuse_person: set[str] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            payload = json.loads(body)
            status = 400 if payload.get("person_id") in self.refuse_person else 200
            if status == 200:
                self.received.append({"headers": headers, "body": body, "json": payload})
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    server = await asyncio.start_server(r.handle, "127.0.0.1", r.port)
    yield r
    server.close()


def notifications_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "WEBHOOK_URL": f"http://127.0.0.1:{receiver.port}/hook",
        "WEBHOOK_SECRET": SECRET,
        "DISPATCH_LEASE_S": "3",
        "RETRY_BASE_S": "0.5",
        **extra,
    }


def restart_notifications(stack: Stack, env: dict[str, str] | None, kill: bool = False) -> None:
    stack.stop_part("notifications", kill=kill)
    stack.start_service("notifications", env)


@pytest.fixture(scope="module")
def notify(stack: Stack, receiver: Receiver) -> Iterator[Stack]:
    """The stack with notifications started with the webhook channel configured; the
    default service is put back afterwards."""
    for name in ("meetings", "reports"):
        if not stack.is_running(name):
            stack.start_service(name)
    restart_notifications(stack, notifications_env(receiver))
    yield stack
    restart_notifications(stack, None)


@pytest.fixture()
def clock(notify: Stack) -> Iterator[Any]:
    """Moves the services' clock. It starts at the next 10:00 in Hà Nội, so quiet hours
    hold nothing back; ``clock(days)`` moves it forward from there."""
    path = notify.settings.clock_offset_file
    assert path is not None
    now = datetime.now(LOCAL_TZ)
    target = now.replace(hour=10, minute=0, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    base = (target - now).total_seconds()
    state = {"offset": base}
    path.write_text(str(base))

    def move(days: float) -> datetime:
        state["offset"] += days * DAY
        path.write_text(str(state["offset"]))
        return datetime.now(LOCAL_TZ) + timedelta(seconds=state["offset"])

    move.now = lambda: datetime.now(LOCAL_TZ) + timedelta(seconds=state["offset"])  # type: ignore[attr-defined]
    yield move
    path.write_text("0")


# -- an organisation with people and contacts -------------------------------------------


class Org(UnitLadder):
    """Province → district → ward → one cell, with members, officials and contacts."""

    def __init__(self, stack: Stack, ward_level: str = "ward") -> None:
        super().__init__(stack, ward_level)
        self.cell = f"{self.ward}.to-01"
        self.members = [f"{self.cell}.dv{i}" for i in (1, 2, 3)]
        self.supervisor = f"{self.ward}.uv1"  # the ward committee member in charge
        self.ward_official = f"{self.ward}.bt"
        self.district_official = f"{self.district}.bt"

    def email(self, person: str) -> str:
        return f"{person}@thu.chibo.local"

    async def register(self) -> None:
        await super().register()
        for unit, person in (
            (self.ward, self.ward_official),
            (self.district, self.district_official),
        ):
            await self.send(
                "AppointUnitOfficial",
                {
                    "unit_id": unit,
                    "role": "secretary",
                    "person_id": person,
                    "full_name": "Lê Văn Bí",
                },
            )
        await self.send(
            "RegisterCell",
            {"cell_id": self.cell, "ward_id": self.ward, "name": "Chi bộ tổ dân phố số 1"},
        )
        for i, member in enumerate(self.members):
            await self.send(
                "AdmitMember",
                {
                    "cell_id": self.cell,
                    "ward_id": self.ward,
                    "member_id": member,
                    "full_name": f"Nguyễn Văn Thành {i}",
                },
            )
        for role, person in (
            ("secretary", self.members[0]),
            ("ward_member_in_charge", self.supervisor),
        ):
            await self.send(
                "AppointOfficial",
                {
                    "cell_id": self.cell,
                    "ward_id": self.ward,
                    "role": role,
                    "person_id": person,
                    "full_name": "Trần Thị Hoa",
                },
            )
        # Everyone but the third member has an e-mail address; the second also a phone.
        for person in [
            *self.members[:2],
            self.supervisor,
            self.ward_official,
            self.district_official,
        ]:
            body: dict[str, Any] = {
                "person_id": person,
                "ward_id": self.ward,
                "email": self.email(person),
            }
            if person == self.members[1]:
                body["phone"] = "+84 912 345 678"
            await self.send("SetContactDetails", body)

    async def schedule(self, start: datetime, kind: str = "regular") -> str:
        meeting = f"{self.cell}.m{uuid.uuid4().hex[:6]}"
        await self.send(
            "ScheduleMeeting",
            {
                "meeting_id": meeting,
                "ward_id": self.ward,
                "cell_id": self.cell,
                "kind": kind,
                "scheduled_start": start.isoformat(),
                "agenda": ["Quán triệt nghị quyết", "Kiến nghị của cử tri về đường giao thông"],
                "location": "Nhà văn hóa tổ 1",
            },
        )
        return meeting

    async def raise_petition(self) -> str:
        petition = f"{self.ward}.kn-{uuid.uuid4().hex[:6]}"
        await self.send(
            "RaisePetition",
            {
                "petition_id": petition,
                "ward_id": self.ward,
                "cell_id": self.cell,
                "category": "roads_infrastructure",
                "place": "Ngõ 5, đường Lê Lai",
                "raised_by": "Ông Trần Văn Hùng",
                "text": "Đường ngõ xuống cấp, đề nghị sửa chữa.",
            },
        )
        return petition


async def new_org(stack: Stack, ward_level: str = "ward") -> Org:
    org = Org(stack, ward_level)
    await org.register()
    return org


async def mails(
    stack: Stack, person: str, subject_part: str, at_least: int = 1
) -> list[EmailMessage]:
    address = f"{person}@thu.chibo.local"

    async def arrived() -> list[EmailMessage] | None:
        found = [m for m in mails_to(stack.maildir, address) if subject_part in str(m["Subject"])]
        return found if len(found) >= at_least else None

    return await eventually(arrived, timeout_s=45, what=f"mail '{subject_part}' to {person}")


def found_mails(stack: Stack, person: str, subject_part: str) -> list[EmailMessage]:
    return [
        m
        for m in mails_to(stack.maildir, f"{person}@thu.chibo.local")
        if subject_part in str(m["Subject"])
    ]


async def deliveries(stack: Stack, ref: str) -> list[Any]:
    return await fetch(
        stack.database_url,
        "select delivery_id, trigger, recipient, channel, status, reason"
        " from notifications.deliveries where trigger_ref = $1 order by delivery_id",
        ref,
    )


async def settled(stack: Stack, ref: str, n: int) -> list[Any]:
    """The deliveries about ``ref`` once ``n`` of them exist and none is still on its way."""

    async def done() -> list[Any] | None:
        rows = await deliveries(stack, ref)
        busy = any(r["status"] in ("pending", "sending") for r in rows)
        return rows if len(rows) >= n and not busy else None

    return await eventually(done, timeout_s=45, what=f"deliveries about {ref} settled")


def verify_signature(received: dict[str, Any]) -> None:
    headers, body = received["headers"], received["body"]
    timestamp = headers["x-chibo-timestamp"]
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    assert headers["x-chibo-signature"] == "sha256=" + mac.hexdigest()


# -- the tests ---------------------------------------------------------------------------


async def test_meeting_notice_reaches_members_and_supervisor_once_by_mail_and_webhook(
    notify: Stack, receiver: Receiver, clock: Any
) -> None:
    org = await new_org(notify)
    async with httpx.AsyncClient(base_url=notify.service_url("notifications")) as c:
        token = notify.issue_token("ward_official", "ward", org.ward, "ward-office")
        auth = {"Authorization": f"Bearer {token}"}
        bad = await c.put(
            f"/v1/people/{org.members[1]}/preferences", json={"channels": ["fax"]}, headers=auth
        )
        assert bad.status_code == 422 and bad.json()["code"] == "unknown_channel"
        other = notify.issue_token("ward_official", "ward", "another-ward", "x")
        denied = await c.put(
            f"/v1/people/{org.members[1]}/preferences",
            json={"channels": ["webhook"]},
            headers={"Authorization": f"Bearer {other}"},
        )
        assert denied.status_code in (403,), denied.text  # the directory may lag: retried below

        async def preference_set() -> bool:
            r = await c.put(
                f"/v1/people/{org.members[1]}/preferences",
                json={"channels": ["email", "webhook"]},
                headers=auth,
            )
            return r.status_code == 200

        await eventually(preference_set, what="preference accepted once the member is known")
        unauth = await c.put(f"/v1/people/{org.members[1]}/preferences", json={"channels": ["log"]})
        assert unauth.status_code == 401

    start = (clock.now() + timedelta(days=3)).replace(hour=19, minute=30, second=0, microsecond=0)
    meeting = await org.schedule(start)
    # The cell and the ward by their registered names, not their ids.
    subject = f"[Chi bộ tổ dân phố số 1] Thông báo lịch sinh hoạt thường kỳ ngày {start:%d/%m/%Y}"
    for person in (org.members[0], org.members[1], org.supervisor):
        [mail] = await mails(notify, person, "Thông báo lịch")
        assert str(mail["Subject"]) == subject
        assert mail["To"] == f"{person}@thu.chibo.local"
        assert mail["Message-ID"].startswith("<delivery-")
        text = text_of(mail)
        assert "Kính gửi các đồng chí đảng viên Chi bộ" in text
        assert "Kính gửi các đồng chí đảng viên Chi bộ tổ dân phố số 1," in text
        assert "vào lúc 19:30" in text and "Kiến nghị của cử tri về đường giao thông" in text
        assert text.rstrip().endswith("Đảng ủy phường Nam Ngạn") and org.ward not in text
        html = text_of(mail, "html")
        assert "<li>Quán triệt nghị quyết</li>" in html
        assert "<strong>Chi bộ tổ dân phố số 1</strong>" in html
        assert "<em>Đảng ủy phường Nam Ngạn</em>" in html and org.ward not in html

    async def webhook() -> list[dict[str, Any]] | None:
        got = [r for r in receiver.received if r["json"]["person_id"] == org.members[1]]
        return got or None

    [hook] = await eventually(webhook, what="webhook for the member who chose it")
    verify_signature(hook)
    assert hook["json"]["phone"] == "+84 912 345 678"
    assert hook["json"]["subject"] == subject
    assert "Kính gửi các đồng chí đảng viên" in hook["json"]["text"]

    rows = await settled(notify, meeting, 5)
    by = {(r["recipient"], r["channel"]): (r["status"], r["reason"]) for r in rows}
    assert by[(org.members[2], "email")] == ("suppressed", "no_contact")  # no address
    assert by[(org.members[1], "webhook")] == ("sent", None)
    assert not any(r["recipient"] == org.ward_official for r in rows)  # not for the ward

    # Redelivery: the same envelope bytes published again on the events topic change nothing.
    records = await read_topic(
        notify.kafka_bootstrap,
        EVENTS_TOPIC,
        lambda rs: any(_event_of(r) == ("MeetingScheduled", meeting) for r in rs),
    )
    original = next(r for r in records if _event_of(r) == ("MeetingScheduled", meeting))
    before = await _duplicates(notify)
    producer = AIOKafkaProducer(bootstrap_servers=notify.kafka_bootstrap)
    await producer.start()
    try:
        for _ in range(2):
            await producer.send_and_wait(EVENTS_TOPIC, original.value, key=original.key)
    finally:
        await producer.stop()

    async def seen_twice() -> bool:
        return await _duplicates(notify) >= before + 2

    await eventually(seen_twice, what="the redelivered event counted as a duplicate")
    assert len(await deliveries(notify, meeting)) == len(rows)
    for person in (org.members[0], org.members[1], org.supervisor):
        assert len(found_mails(notify, person, "Thông báo lịch")) == 1
    assert len([r for r in receiver.received if r["json"]["person_id"] == org.members[1]]) == 1

    # Erasure holds for every later message: the next notice finds no address.
    await org.send("EraseContactDetails", {"person_id": org.members[0], "ward_id": org.ward})
    moved = await org.send(
        "RescheduleMeeting",
        {
            "meeting_id": meeting,
            "ward_id": org.ward,
            "cell_id": org.cell,
            "scheduled_start": (start + timedelta(days=1)).isoformat(),
            "reason": "Trùng lịch tổng vệ sinh",
        },
    )
    assert moved["stream_version"] == 2
    await mails(notify, org.supervisor, "Thay đổi lịch")
    rows = await settled(notify, meeting, 10)
    erased = [
        r
        for r in rows
        if r["trigger"] == "meeting_rescheduled" and r["recipient"] == org.members[0]
    ]
    assert [(r["status"], r["reason"]) for r in erased] == [("suppressed", "no_contact")]


def _event_of(record: Any) -> tuple[str, str] | None:
    try:
        envelope = json.loads(record.value)
    except ValueError:
        return None
    return envelope.get("event_type"), envelope.get("payload", {}).get("meeting_id")


async def _duplicates(stack: Stack) -> float:
    duplicates = await metric_value(
        stack,
        "notifications",
        "chibo_consumed_events_total",
        outcome="duplicate",
        consumer="notifications",
    )
    return duplicates or 0.0


async def test_reminders_and_deadline_warnings_fire_on_a_moved_clock_and_are_cancelled(
    notify: Stack, clock: Any
) -> None:
    org = await new_org(notify)
    day0 = clock.now()
    start_a = (day0 + timedelta(days=3)).replace(hour=19, minute=30, second=0, microsecond=0)
    meeting_a = await org.schedule(start_a)
    meeting_b = await org.schedule(start_a)
    meeting_c = await org.schedule(start_a, kind="thematic")
    start_b = start_a + timedelta(days=3)
    await org.send(
        "RescheduleMeeting",
        {
            "meeting_id": meeting_b,
            "ward_id": org.ward,
            "cell_id": org.cell,
            "scheduled_start": start_b.isoformat(),
            "reason": "Trùng lịch",
        },
    )
    await org.send(
        "CancelMeeting",
        {"meeting_id": meeting_c, "ward_id": org.ward, "cell_id": org.cell, "reason": "Mưa bão"},
    )
    kept = await org.raise_petition()
    resolved = await org.raise_petition()
    await mails(notify, org.members[0], "tiếp nhận kiến nghị", at_least=2)  # the secretary
    await org.send(
        "ResolvePetition",
        {"petition_id": resolved, "ward_id": org.ward, "response": "Đã sửa xong."},
    )
    await mails(notify, org.members[0], "đã được giải quyết")

    async def timers_state() -> dict[str, list[str]] | None:
        rows = await fetch(
            notify.database_url,
            "select kind, ref_id, status from notifications.timers where ref_id = any($1)",
            [meeting_a, meeting_b, meeting_c, kept, resolved],
        )
        state: dict[str, list[str]] = {}
        for r in rows:
            state.setdefault(r["ref_id"], []).append(r["status"])
        return state if resolved in state and "pending" not in state[resolved] else None

    state = await eventually(timers_state, what="the resolved petition's warnings cancelled")
    assert state[resolved] == ["cancelled", "cancelled"]
    assert sorted(state[meeting_b]) == ["cancelled", "pending"]  # moved: old one cancelled
    assert state[meeting_c] == ["cancelled"]
    assert state[kept] == ["pending", "pending"]
    reminder = f"Nhắc lịch sinh hoạt thường kỳ lúc 19:30 ngày {start_a:%d/%m/%Y}"
    assert found_mails(notify, org.supervisor, "Nhắc lịch") == []

    # Day 0 is 10:00. On day 2 at 22:00: past 24 h before meeting A (19:30 on day 3), not
    # before B (moved 3 days on).
    clock(2.5)
    [mail] = await mails(notify, org.supervisor, reminder)
    assert "tại Nhà văn hóa tổ 1" in text_of(mail)
    await mails(notify, org.members[1], reminder)
    reminder_b = f"Nhắc lịch sinh hoạt thường kỳ lúc 19:30 ngày {start_b:%d/%m/%Y}"
    assert found_mails(notify, org.supervisor, reminder_b) == []

    # Day 5 at 12:24: past 48 h before the kept petition's 7-day deadline (day 7, 10:00).
    clock(2.6)
    [warning] = await mails(notify, org.members[0], "Sắp hết hạn giải quyết kiến nghị")
    assert kept in str(warning["Subject"])
    assert "còn khoảng 46 giờ" in text_of(warning)
    assert "Kính gửi các đồng chí cấp ủy Chi bộ tổ dân phố số 1," in text_of(warning)
    # Day 5 at 22:00: the moved meeting B's reminder (19:30 on day 6, 24 h before).
    clock(0.4)
    await mails(notify, org.supervisor, reminder_b)

    # Day 7 at 12:24: the deadline (day 7, 10:00) has passed, the meetings service
    # escalates it, and the ward's officials hear it with its history. The resolved petition
    # never warned anyone.
    clock(1.6)
    [escalated] = await mails(notify, org.ward_official, "được chuyển lên cấp phường, xã")
    text = text_of(escalated)
    assert "Tiếp nhận ở cấp chi bộ" in text and "quá thời hạn giải quyết" in text
    assert text.startswith("Kính gửi Thường trực Đảng ủy phường Nam Ngạn,")
    assert f"{kept} của Chi bộ tổ dân phố số 1 được chuyển" in text
    assert all(
        resolved not in str(m["Subject"])
        for m in found_mails(notify, org.members[0], "Sắp hết hạn")
    )
    for person in (org.members[0], org.members[1], org.supervisor):
        assert len(found_mails(notify, person, reminder)) == 1


async def test_a_notice_held_by_quiet_hours_is_withdrawn_when_its_meeting_is_called_off(
    notify: Stack, clock: Any
) -> None:
    org = await new_org(notify)
    clock(12.5 / 24)  # 22:30 on day 0: quiet hours hold the (normal) schedule notices
    start = (clock.now() + timedelta(days=3)).replace(hour=19, minute=30, second=0, microsecond=0)
    called_off = await org.schedule(start)
    kept = await org.schedule(start + timedelta(days=1))  # the control: it goes at 06:00

    async def held() -> list[Any] | None:
        rows = await deliveries(notify, called_off)
        return rows if len(rows) == 5 and all(r["status"] == "pending" for r in rows) else None

    await eventually(held, what="the schedule notice held by quiet hours")
    await org.send(
        "CancelMeeting",
        {"meeting_id": called_off, "ward_id": org.ward, "cell_id": org.cell, "reason": "Mưa bão"},
    )
    # The cancellation is urgent: everyone hears at once, the cell's mailbox too.
    for person in (org.members[0], org.members[1], org.supervisor):
        await mails(notify, person, "Hủy buổi")
    mailbox = f"chi-bo.{org.cell}@chibo.local"

    async def mailbox_told() -> list[EmailMessage] | None:
        got = [m for m in mails_to(notify.maildir, mailbox) if "Hủy buổi" in str(m["Subject"])]
        return got or None

    await eventually(mailbox_told, timeout_s=45, what="the cancellation in the cell mailbox")
    rows = await settled(notify, called_off, 10)
    scheduled = [(r["status"], r["reason"]) for r in rows if r["trigger"] == "meeting_scheduled"]
    assert scheduled == [("suppressed", "superseded")] * 5

    clock(8 / 24)  # 06:30 on day 1: the quiet hours are over
    kept_subject = f"Thông báo lịch sinh hoạt thường kỳ ngày {start + timedelta(days=1):%d/%m/%Y}"
    await mails(notify, org.members[0], kept_subject)
    await settled(notify, kept, 5)
    called_off_subject = f"Thông báo lịch sinh hoạt thường kỳ ngày {start:%d/%m/%Y}"
    for person in (org.members[0], org.members[1], org.supervisor):
        assert found_mails(notify, person, called_off_subject) == []
    assert not [
        m for m in mails_to(notify.maildir, mailbox) if called_off_subject in str(m["Subject"])
    ]


class HangingHandler:
    """An SMTP server that takes the message in and then never answers: the service is
    killed while the message is on its way."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope.content)
        await asyncio.Event().wait()  # never answers
        return "250 OK"


async def test_a_kill_during_sending_resends_at_most_the_one_message_in_flight(
    notify: Stack, receiver: Receiver, clock: Any
) -> None:
    org = await new_org(notify)
    handler = HangingHandler()
    port = free_port()
    hanging = Controller(handler, hostname="127.0.0.1", port=port)
    hanging.start()
    try:
        # One SMTP connection to a server that never answers: the first message hangs.
        restart_notifications(
            notify, notifications_env(receiver, SMTP_PORT=str(port), SMTP_CONNECTIONS="1")
        )
        start = (clock.now() + timedelta(days=3)).replace(hour=19, minute=30, microsecond=0)
        meeting = await org.schedule(start)

        async def in_flight() -> bool:
            return len(handler.received) >= 1

        await eventually(in_flight, timeout_s=45, what="a message in flight")
        rows = await deliveries(notify, meeting)
        # Three people with an address and the cell's mailbox are claimed; the member
        # without an address was settled at once.
        claimed = sorted(r["status"] for r in rows if r["reason"] is None)
        assert claimed == ["sending"] * 4
        notify.stop_part("notifications", kill=True)  # kill -9 between sending and recording
    finally:
        hanging.stop()
    assert len(handler.received) == 1  # the duplicate window: one message per connection
    in_flight_id = _message_id(handler.received[0])

    restart_notifications(notify, notifications_env(receiver))
    rows = await settled(notify, meeting, 5)
    assert [r["status"] for r in rows if r["reason"] is None] == ["sent"] * 4
    ids = []
    for person in (org.members[0], org.members[1], org.supervisor):
        [mail] = found_mails(notify, person, "Thông báo lịch")  # exactly once in the sink
        ids.append(mail["Message-ID"])
    [office] = mails_to(notify.maildir, f"chi-bo.{org.cell}@chibo.local")
    ids.append(office["Message-ID"])
    # The one message the dead process had on the wire came again, with the same id, so a
    # mail client folds the two; every other message came once.
    assert in_flight_id in ids


def _message_id(raw: bytes) -> str:
    import email
    import email.policy

    return str(email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"])


async def test_a_permanent_failure_is_dead_lettered_and_resent_with_the_cli(
    notify: Stack, receiver: Receiver, clock: Any
) -> None:
    org = await new_org(notify)
    receiver.refuse_person.add(org.members[1])  # the gateway answers 400 for this one
    async with httpx.AsyncClient(base_url=notify.service_url("notifications")) as c:
        token = notify.issue_token("system_publisher", "system", None, "ops")

        async def preference_set() -> bool:
            r = await c.put(
                f"/v1/people/{org.members[1]}/preferences",
                json={"channels": ["webhook"]},
                headers={"Authorization": f"Bearer {token}"},
            )
            return r.status_code == 200

        await eventually(preference_set, what="preference set")
    start = (clock.now() + timedelta(days=3)).replace(hour=19, minute=30, microsecond=0)
    meeting = await org.schedule(start)
    rows = await settled(notify, meeting, 4)
    [dead] = [r for r in rows if r["status"] == "dead"]
    assert (dead["recipient"], dead["channel"], dead["reason"]) == (
        org.members[1],
        "webhook",
        "permanent",
    )
    env = {"DATABASE_URL": notify.database_url, "PATH": "/usr/bin:/bin"}
    listing = _chibo(["notifications", "dlq", "list", "--json"], env)
    assert listing.returncode == 0, listing.stderr
    assert dead["delivery_id"] in [d["delivery_id"] for d in json.loads(listing.stdout)["dead"]]
    assert _chibo(["notifications", "resend"], env).returncode == 2
    assert _chibo(["notifications", "resend", "999999999"], env).returncode == 3
    receiver.refuse_person.discard(org.members[1])
    resent = _chibo(["notifications", "resend", str(dead["delivery_id"])], env)
    assert resent.returncode == 0, resent.stderr

    async def arrived() -> bool:
        return any(r["json"]["person_id"] == org.members[1] for r in receiver.received)

    await eventually(arrived, what="the resent webhook")
    rows = await settled(notify, meeting, 4)
    assert [r["status"] for r in rows if r["delivery_id"] == dead["delivery_id"]] == ["sent"]
    assert _chibo(["notifications", "resend", str(dead["delivery_id"])], env).returncode == 3


async def test_resend_holds_for_quiet_hours_and_skips_outdated_meeting_notices(
    notify: Stack, receiver: Receiver, clock: Any
) -> None:
    """`chibo notifications resend` at 23:00 (the services' clock, read from the same
    offset file): a meeting's schedule notice waits for 06:00, its urgent cancellation
    notice goes at once, and the schedule notices of a meeting called off or already begun
    are not resent: they stay dead-lettered, reported."""
    org = await new_org(notify)
    person = org.members[1]
    receiver.refuse_person.add(person)  # the gateway answers 400: dead at once
    async with httpx.AsyncClient(base_url=notify.service_url("notifications")) as c:
        token = notify.issue_token("system_publisher", "system", None, "ops")

        async def preference_set() -> bool:
            r = await c.put(
                f"/v1/people/{person}/preferences",
                json={"channels": ["webhook"]},
                headers={"Authorization": f"Bearer {token}"},
            )
            return r.status_code == 200

        await eventually(preference_set, what="preference set")
    today = clock.now()
    soon = (today + timedelta(days=1)).replace(hour=19, minute=30, second=0, microsecond=0)
    later = (today + timedelta(days=3)).replace(hour=19, minute=30, second=0, microsecond=0)
    kept = await org.schedule(later)
    called_off = await org.schedule(later)
    begun = await org.schedule(soon)
    for meeting in (kept, called_off, begun):
        await settled(notify, meeting, 4)
    await org.send(
        "CancelMeeting",
        {"meeting_id": called_off, "ward_id": org.ward, "cell_id": org.cell, "reason": "Mưa bão"},
    )

    async def dead_of(meeting: str, trigger: str) -> int:
        async def found() -> int | None:
            rows = await deliveries(notify, meeting)
            ids = [
                r["delivery_id"]
                for r in rows
                if (r["recipient"], r["trigger"], r["status"]) == (person, trigger, "dead")
            ]
            return ids[0] if ids else None

        return await eventually(found, what=f"the {trigger} notice about {meeting} dead")

    scheduled = {m: await dead_of(m, "meeting_scheduled") for m in (kept, called_off, begun)}
    cancelled = await dead_of(called_off, "meeting_cancelled")
    receiver.refuse_person.discard(person)

    # Two days on, 23:00 in Hà Nội: quiet hours, and the soon meeting has begun.
    night = clock(2 + 13 / 24)
    assert night.hour == 23
    env = {
        "DATABASE_URL": notify.database_url,
        "PATH": "/usr/bin:/bin",
        "CLOCK_OFFSET_FILE": str(notify.settings.clock_offset_file),
    }
    ids = [*scheduled.values(), cancelled]
    resent = _chibo(["notifications", "resend", *map(str, ids)], env)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    out = " ".join(resent.stdout.split())
    assert f"sent now: [{cancelled}]" in out
    assert f"held by quiet hours until {(night + timedelta(days=1)):%Y-%m-%d} 06:00:00" in out
    assert f"[{scheduled[kept]}]" in out
    assert f"(superseded); they stay dead-lettered: [{scheduled[called_off]}]" in out
    assert f"(stale); they stay dead-lettered: [{scheduled[begun]}]" in out

    async def row(delivery_id: int) -> Any:
        [r] = await fetch(
            notify.database_url,
            "select status, next_attempt_at from notifications.deliveries where delivery_id = $1",
            delivery_id,
        )
        return r

    async def sent(delivery_id: int) -> bool:
        return (await row(delivery_id))["status"] == "sent"

    await eventually(lambda: sent(cancelled), what="the resent cancellation, at 23:00")
    held = await row(scheduled[kept])
    assert held["status"] == "pending"
    morning = (night + timedelta(days=1)).replace(hour=6, minute=0, second=0, microsecond=0)
    assert held["next_attempt_at"] == morning
    for skipped in (scheduled[called_off], scheduled[begun]):
        assert (await row(skipped))["status"] == "dead"
    # Resending again finds them still dead-lettered, and still outdated.
    again = _chibo(["notifications", "resend", str(scheduled[begun])], env)
    assert again.returncode == 0 and "(stale)" in again.stdout, again.stdout + again.stderr

    clock(7.5 / 24)  # 06:30: the held one goes out
    await eventually(lambda: sent(scheduled[kept]), what="the held notice, at 06:00")


def _chibo(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=60,
    )


async def test_attendance_the_missing_meeting_and_the_late_report_reach_the_ward(
    notify: Stack, clock: Any
) -> None:
    org = await new_org(notify)
    idle_cell = f"{org.ward}.to-02"
    await org.send(
        "RegisterCell", {"cell_id": idle_cell, "ward_id": org.ward, "name": "Chi bộ tổ số 2"}
    )

    async def checks() -> dict[str, Any] | None:
        rows = await fetch(
            notify.database_url,
            "select kind, ref_id, due_at, payload from notifications.timers"
            " where ref_id = any($1) and status = 'pending'",
            [org.cell, idle_cell, org.ward],
        )
        found = {r["ref_id"]: r for r in rows}
        return found if len(found) == 3 else None

    timers_now = await eventually(checks, what="the monthly checks of both cells and the ward")
    check_at = timers_now[org.cell]["due_at"].astimezone(LOCAL_TZ)
    assert check_at.hour == 0 and check_at.day == 11  # after the 10th, in Hà Nội
    assert timers_now[org.ward]["due_at"].astimezone(LOCAL_TZ).day == 10
    month = json.loads(timers_now[idle_cell]["payload"])["month"]

    # The first cell holds its regular meeting the evening before the check; two of the
    # three members come: 66.7 %, below 90 %.
    start = check_at - timedelta(hours=4, minutes=30)
    meeting = await org.schedule(start)
    clock((start + timedelta(hours=1) - clock.now()).total_seconds() / DAY)
    await org.send(
        "OpenMeeting",
        {
            "meeting_id": meeting,
            "ward_id": org.ward,
            "cell_id": org.cell,
            "opened_at": (start + timedelta(minutes=5)).isoformat(),
            "roll_call": [
                {"member_id": org.members[0], "status": "present"},
                {"member_id": org.members[1], "status": "present"},
                {"member_id": org.members[2], "status": "absent_unexcused"},
            ],
            "supervisor_present": True,
        },
    )
    [low] = await mails(notify, org.ward_official, "tỷ lệ dự sinh hoạt 66,7% (dưới 90,0%)")
    assert "có 2/3 đảng viên có mặt" in text_of(low)

    # 10:00 on the check day: only the idle cell is reported to the ward.
    clock((check_at + timedelta(hours=10) - clock.now()).total_seconds() / DAY)
    label = f"{month[5:]}/{month[:4]}"
    await mails(notify, org.ward_official, "Chi bộ tổ số 2 chưa sinh hoạt thường kỳ")
    missing = found_mails(notify, org.ward_official, "chưa sinh hoạt thường kỳ")
    assert [str(m["Subject"]) for m in missing] == [
        f"[Đảng bộ phường Nam Ngạn] Chi bộ tổ số 2 chưa sinh hoạt thường kỳ tháng {label}"
    ]
    assert "Kính gửi Thường trực Đảng ủy phường Nam Ngạn," in text_of(missing[0])

    # The ward's report for the month it was registered in is due on the 10th after it.
    due = timers_now[org.ward]["due_at"].astimezone(LOCAL_TZ)
    if clock.now() < due + timedelta(hours=10):
        clock((due + timedelta(hours=10) - clock.now()).total_seconds() / DAY)
    report_month = json.loads(timers_now[org.ward]["payload"])["month"]
    subject = f"Chưa gửi báo cáo tháng {report_month[5:]}/{report_month[:4]}"
    for person in (org.ward_official, org.district_official):  # the ward and the level above
        [late] = await mails(notify, person, subject)
        assert "Đảng ủy phường Nam Ngạn chưa gửi báo cáo" in text_of(late)
        assert str(late["Subject"]).startswith("[Đảng bộ phường Nam Ngạn] ")
    next_check = await fetch(
        notify.database_url,
        "select payload->>'month' as month from notifications.timers"
        " where ref_id = $1 and kind = 'report_late' and status = 'pending'",
        org.ward,
    )
    assert [r["month"] for r in next_check] != []  # re-armed for the following month

    # Submitted late after all: the ward and the level above hear that it is in.
    await org.send(
        "SubmitWardReport",
        {"ward_id": org.ward, "month": report_month, "submitted_by": "Văn phòng Đảng ủy"},
    )
    ready = f"Báo cáo tháng {report_month[5:]}/{report_month[:4]} đã được gửi"
    for person in (org.ward_official, org.district_official):
        [mail] = await mails(notify, person, ready)
        assert "chậm so với hạn" in text_of(mail)


async def test_a_communes_notices_name_the_xa_and_the_cell_as_registered(
    notify: Stack, clock: Any
) -> None:
    """A commune (đảng bộ xã) is no phường: its notices are signed "Đảng ủy xã …", and
    every notice names the cell and the commune as registered, in subject and body."""
    org = await new_org(notify, ward_level="commune")

    async def directory() -> list[Any] | None:
        rows = await fetch(
            notify.database_url,
            "select unit_id as id, level, name from notifications.units where unit_id = $1"
            " union all select cell_id, null, name from notifications.cells where cell_id = $2",
            org.ward,
            org.cell,
        )
        return rows if len(rows) == 2 else None

    found = await eventually(directory, what="the commune and the cell in the directory")
    rows = {r["id"]: (r["level"], r["name"]) for r in found}
    assert rows == {
        org.ward: ("commune", "Đảng bộ xã Thiệu Vân"),
        org.cell: (None, "Chi bộ tổ dân phố số 1"),
    }

    start = (clock.now() + timedelta(days=3)).replace(hour=19, minute=30, second=0, microsecond=0)
    await org.schedule(start)
    [mail] = await mails(notify, org.members[0], "Thông báo lịch")
    assert str(mail["Subject"]) == (
        f"[Chi bộ tổ dân phố số 1] Thông báo lịch sinh hoạt thường kỳ ngày {start:%d/%m/%Y}"
    )
    text, html = text_of(mail), text_of(mail, "html")
    assert text.startswith("Kính gửi các đồng chí đảng viên Chi bộ tổ dân phố số 1,")
    assert text.rstrip().endswith("Đảng ủy xã Thiệu Vân")
    assert "<em>Đảng ủy xã Thiệu Vân</em>" in html
    for part in (text, html):
        assert "phường" not in part and org.ward not in part

    # Last month's report (a month that is over), late or not: the commune and the level
    # above hear it by name.
    first = clock.now().replace(day=1)
    month = f"{(first - timedelta(days=1)):%Y-%m}"
    await org.send(
        "SubmitWardReport",
        {"ward_id": org.ward, "month": month, "submitted_by": "Văn phòng Đảng ủy"},
    )
    label = f"{month[5:]}/{month[:4]}"
    for person in (org.ward_official, org.district_official):
        [report] = await mails(notify, person, f"Báo cáo tháng {label} đã được gửi")
        assert str(report["Subject"]) == f"[Đảng bộ xã Thiệu Vân] Báo cáo tháng {label} đã được gửi"
        assert f"Đảng ủy xã Thiệu Vân đã gửi báo cáo tháng {label}" in text_of(report)


async def test_low_notices_wait_for_the_daily_digest_and_passed_leads_catch_up(
    notify: Stack, receiver: Receiver, clock: Any
) -> None:
    # A 200 h lead is already past for a 7-day deadline: one warning goes out at once,
    # and the 4 h one still waits.
    env = notifications_env(receiver, DIGEST_AT="07:00", PETITION_DEADLINE_LEADS="200h,4h")
    restart_notifications(notify, env)
    try:
        org = await new_org(notify)
        petitions = [await org.raise_petition() for _ in range(2)]
        await mails(notify, org.members[0], "tiếp nhận kiến nghị", at_least=2)  # normal: now
        warnings = await mails(notify, org.members[0], "Sắp hết hạn giải quyết", at_least=2)
        assert len(warnings) == 2
        for warning in warnings:
            assert "còn khoảng 7 ngày" in text_of(warning)  # 168 hours, said in days
        for petition in petitions:
            await org.send(
                "ResolvePetition",
                {"petition_id": petition, "ward_id": org.ward, "response": "Đã sửa xong."},
            )

        async def held() -> list[Any] | None:
            rows = await fetch(
                notify.database_url,
                "select status from notifications.deliveries where trigger = 'petition_resolved'"
                " and trigger_ref = any($1) and recipient = $2",
                petitions,
                org.members[0],
            )
            return rows if len(rows) == 2 else None

        assert [r["status"] for r in await eventually(held, what="held")] == ["digest"] * 2
        assert found_mails(notify, org.members[0], "đã được giải quyết") == []
        clock(21 / 24)  # 07:00 the next morning
        [digest] = await mails(notify, org.members[0], "Tổng hợp 2 thông báo")
        text = text_of(digest)
        assert all(f"Kiến nghị {p} đã được giải quyết" in text for p in petitions)
        assert found_mails(notify, org.members[0], "đã được giải quyết") == []  # not one by one
        assert [r["status"] for r in await held()] == ["digested"] * 2  # type: ignore[union-attr]
        warned = await fetch(
            notify.database_url,
            "select ref_id, status from notifications.timers where ref_id = any($1)"
            " order by ref_id, status",
            petitions,
        )
        assert sorted(r["status"] for r in warned) == ["cancelled", "cancelled", "fired", "fired"]
    finally:
        restart_notifications(notify, notifications_env(receiver))
