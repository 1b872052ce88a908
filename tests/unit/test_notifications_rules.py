"""Notification rules (pure) and every trigger's Vietnamese template."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest

from services.notifications.adapters.channels import sign
from services.notifications.adapters.templating import TemplateRenderer
from services.notifications.domain.notices import (
    PRIORITY,
    Priority,
    QuietHours,
    Trigger,
    attendance_rate,
    is_stale,
    meeting_check_at,
    next_local,
    parse_leads,
    parse_local_time,
    report_due_at,
    send_not_before,
    timer_trigger_id,
)
from shared.clock import LOCAL_TZ
from shared.contract.events import (
    Attendance,
    AttendanceEntry,
    EscalationReason,
    MeetingCancelled,
    MeetingKind,
    MeetingOpened,
    MeetingRescheduled,
    MeetingScheduled,
    PetitionCategory,
    PetitionEscalated,
    PetitionRaised,
    PetitionReopened,
    PetitionResolved,
)

QUIET = QuietHours.parse("22:00-06:00")
START = datetime(2026, 12, 3, 12, 30, tzinfo=UTC)  # 19:30 in Hà Nội


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LOCAL_TZ)


def test_quiet_hours_hold_back_until_six_in_the_morning_local_time() -> None:
    assert QUIET is not None
    late = local(2026, 11, 22, 23, 15)
    assert send_not_before(Priority.NORMAL, late, QUIET) == local(2026, 11, 23, 6, 0)
    early = local(2026, 11, 23, 3, 0)
    assert send_not_before(Priority.LOW, early, QUIET) == local(2026, 11, 23, 6, 0)
    day = local(2026, 11, 23, 14, 0)
    assert send_not_before(Priority.NORMAL, day, QUIET) == day
    assert send_not_before(Priority.URGENT, late, QUIET) == late  # urgent ones go at once
    assert QuietHours.parse("off") is None
    with pytest.raises(ValueError):
        QuietHours.parse("10pm-6am")


def test_the_digest_time_is_the_next_one_in_local_time() -> None:
    seven = parse_local_time("07:00")
    assert seven is not None and parse_local_time("off") is None
    assert next_local(local(2026, 11, 22, 23, 0), seven) == local(2026, 11, 23, 7, 0)
    assert next_local(local(2026, 11, 23, 7, 0), seven) == local(2026, 11, 24, 7, 0)
    assert PRIORITY[Trigger.PETITION_RESOLVED] is Priority.LOW


def test_lead_times_and_month_rules() -> None:
    assert parse_leads("4h, 48h") == [timedelta(hours=48), timedelta(hours=4)]
    assert parse_leads("1d,30m") == [timedelta(days=1), timedelta(minutes=30)]
    with pytest.raises(ValueError):
        parse_leads("two days")
    assert report_due_at("2026-12") == local(2027, 1, 10)
    assert meeting_check_at("2026-11", 10) == local(2026, 11, 11)
    assert is_stale(START, START + timedelta(seconds=1))
    assert not is_stale(START, START - timedelta(hours=1))
    due = local(2026, 11, 11)
    assert timer_trigger_id("k", "r", due) == timer_trigger_id("k", "r", due)
    assert timer_trigger_id("k", "r", due) != timer_trigger_id("k", "r2", due)


def test_attendance_leaves_exempt_members_out() -> None:
    roll = [
        AttendanceEntry(member_id="a", status=Attendance.PRESENT),
        AttendanceEntry(member_id="b", status=Attendance.PRESENT),
        AttendanceEntry(member_id="c", status=Attendance.ABSENT_EXCUSED),
        AttendanceEntry(member_id="d", status=Attendance.EXEMPT),
    ]
    assert attendance_rate(roll) == pytest.approx(2 / 3)
    assert attendance_rate([AttendanceEntry(member_id="d", status=Attendance.EXEMPT)]) is None


def test_webhook_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    body = '{"text": "Kính gửi"}'.encode()
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", "1700000000", body) == f"sha256={expected}"


MEETING = MeetingScheduled(
    meeting_id="m1",
    ward_id="nam-ngan",
    cell_id="nam-ngan.to-01",
    kind=MeetingKind.REGULAR,
    scheduled_start=START,
    agenda=["Quán triệt nghị quyết"],
    location="Nhà văn hóa tổ 1",
)
PETITION = PetitionRaised(
    petition_id="kn-1",
    ward_id="nam-ngan",
    cell_id="nam-ngan.to-01",
    category=PetitionCategory.ROADS,
    place="Ngõ 5, đường Lê Lai",
    raised_by="Ông Trần Văn Hùng",
    text="Đường ngõ xuống cấp, đề nghị sửa chữa.",
    raised_at=START,
    level="cell",
    holder_id="nam-ngan.to-01",
    deadline_at=START + timedelta(days=7),
)
FACTS = {
    "petition_id": "kn-1",
    "ward_id": "nam-ngan",
    "cell_id": "nam-ngan.to-01",
    "level": "ward",
    "holder_id": "nam-ngan",
    "deadline_at": START + timedelta(days=22),
    "history": [],
}
HISTORY = [
    {"what": "raised", "at": START, "level": "cell"},
    {"what": "escalated", "at": START + timedelta(days=7), "level": "ward", "reason": "deadline"},
]
CONTEXTS: dict[Trigger, tuple[dict[str, object], str, str]] = {
    Trigger.MEETING_SCHEDULED: ({"meeting": MEETING}, "Thông báo lịch", "lúc 19:30"),
    Trigger.MEETING_RESCHEDULED: (
        {
            "meeting": MeetingRescheduled(
                meeting_id="m1",
                ward_id="nam-ngan",
                cell_id="nam-ngan.to-01",
                scheduled_start=START + timedelta(days=1),
                reason="Trùng lịch bầu cử",
            ),
            "previous_start": START,
            "kind": "regular",
        },
        "Thay đổi lịch sinh hoạt thường kỳ",
        "được chuyển sang lúc 19:30 ngày 04/12/2026",
    ),
    Trigger.MEETING_CANCELLED: (
        {
            "meeting": MeetingCancelled(
                meeting_id="m1", ward_id="nam-ngan", cell_id="nam-ngan.to-01", reason="Mưa bão"
            ),
            "scheduled_start": START,
            "kind": "thematic",
        },
        "Hủy buổi sinh hoạt chuyên đề ngày 03/12/2026",
        "Lý do: Mưa bão",
    ),
    Trigger.MEETING_REMINDER: (
        {"meeting": MEETING, "lead_hours": 24},
        "Nhắc lịch sinh hoạt thường kỳ lúc 19:30",
        "tại Nhà văn hóa tổ 1",
    ),
    Trigger.PETITION_RAISED: (
        {"petition": PETITION},
        "tiếp nhận kiến nghị về giao thông, hạ tầng",
        "Thời hạn giải quyết ở cấp chi bộ: 19:30 ngày 10/12/2026",
    ),
    Trigger.PETITION_DEADLINE: (
        {"petition": FACTS, "remaining": timedelta(hours=4), "as_of": START + timedelta(days=21)},
        "Sắp hết hạn giải quyết kiến nghị kn-1",
        "còn khoảng 4 giờ",
    ),
    Trigger.PETITION_ESCALATED: (
        {
            "escalation": PetitionEscalated(
                petition_id="kn-1",
                ward_id="nam-ngan",
                from_level="cell",
                to_level="ward",
                to_holder_id="nam-ngan",
                reason=EscalationReason.DEADLINE,
                deadline_at=START + timedelta(days=22),
                escalated_at=START + timedelta(days=7),
            ),
            "history": HISTORY,
            "petition": FACTS,
        },
        "được chuyển lên cấp phường, xã",
        "Chuyển lên cấp phường, xã (quá thời hạn giải quyết)",
    ),
    Trigger.PETITION_RESOLVED: (
        {
            "event": PetitionResolved(
                petition_id="kn-1",
                ward_id="nam-ngan",
                level="ward",
                holder_id="nam-ngan",
                response="Đã trải nhựa lại mặt đường.",
                resolved_at=START,
            ),
            "petition": FACTS,
        },
        "đã được giải quyết",
        "Nội dung trả lời: Đã trải nhựa lại mặt đường.",
    ),
    Trigger.PETITION_REOPENED: (
        {
            "event": PetitionReopened(
                petition_id="kn-1",
                ward_id="nam-ngan",
                level="cell",
                reason="Cử tri chưa đồng ý",
                deadline_at=START + timedelta(days=7),
                reopened_at=START,
            ),
            "petition": FACTS,
        },
        "được mở lại",
        "Lý do: Cử tri chưa đồng ý",
    ),
    Trigger.MEETING_MISSING: (
        {
            "cell_id": "nam-ngan.to-01",
            "ward_id": "nam-ngan",
            "month": "2026-11",
            "checked_at": local(2026, 11, 11),
        },
        "chưa sinh hoạt thường kỳ tháng 11/2026",
        "Đến ngày 11/11/2026",
    ),
    Trigger.ATTENDANCE_LOW: (
        {
            "meeting": MeetingOpened(
                meeting_id="m1",
                ward_id="nam-ngan",
                cell_id="nam-ngan.to-01",
                opened_at=START,
                roll_call=[],
                supervisor_present=True,
            ),
            "rate": 0.8,
            "present": 16,
            "counted": 20,
            "threshold": 0.9,
        },
        "tỷ lệ dự sinh hoạt 80,0% (dưới 90,0%)",
        "có 16/20 đảng viên có mặt",
    ),
    Trigger.REPORT_SUBMITTED: (
        {
            "report": {
                "ward_id": "nam-ngan",
                "month": "2026-11",
                "submitted_at": local(2026, 12, 8, 9, 0),
                "due_at": local(2026, 12, 10),
                "on_time": True,
                "submitted_by": "Văn phòng Đảng ủy",
            }
        },
        "Báo cáo tháng 11/2026 đã được gửi",
        "đúng hạn",
    ),
    Trigger.REPORT_LATE: (
        {"ward_id": "nam-ngan", "month": "2026-11", "due_at": local(2026, 12, 10)},
        "Chưa gửi báo cáo tháng 11/2026 (hạn 10/12/2026)",
        "chưa gửi báo cáo tháng 11/2026",
    ),
    Trigger.DIGEST: (
        {
            "day": local(2026, 11, 23, 7, 0),
            "items": [
                {"subject": "Kiến nghị kn-1 đã được giải quyết", "text": "Nội dung trả lời"},
                {"subject": "Báo cáo tháng 10/2026 đã được gửi", "text": "Đúng hạn"},
            ],
        },
        "Tổng hợp 2 thông báo ngày 23/11/2026",
        "2. Báo cáo tháng 10/2026 đã được gửi",
    ),
}


@pytest.mark.parametrize("trigger", list(Trigger))
def test_every_trigger_has_a_vietnamese_subject_text_and_html(trigger: Trigger) -> None:
    context, in_subject, in_text = CONTEXTS[trigger]
    message = TemplateRenderer().render(trigger.value, context)
    assert in_subject in message.subject
    assert in_text in message.text
    assert message.html.startswith("<!doctype html>") and 'lang="vi"' in message.html
    for part in (message.subject, message.text, message.html):
        assert unicodedata.is_normalized("NFC", part)
    assert "\n" not in message.subject
