"""Vietnamese notices: rendered text, and the e-mail as it goes over the wire."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path

from services.notifications.adapters.email import build_message
from services.notifications.adapters.templating import TemplateRenderer
from shared.contract import MeetingKind, MeetingScheduled

MEETING = MeetingScheduled(
    meeting_id="m1",
    ward_id="nam-ngan",
    cell_id="nam-ngan.to-01",
    kind=MeetingKind.THEMATIC,
    scheduled_start=datetime(2026, 12, 3, 12, 30, tzinfo=UTC),  # 19:30 in Hà Nội
    agenda=["Học tập và làm theo tư tưởng, đạo đức, phong cách Hồ Chí Minh"],
)


def test_meeting_scheduled_renders_in_vietnamese_local_time() -> None:
    message = TemplateRenderer().render("meeting_scheduled", {"meeting": MEETING})
    assert message.subject == (
        "[Chi bộ nam-ngan.to-01] Thông báo lịch sinh hoạt chuyên đề ngày 03/12/2026"
    )
    assert "vào lúc 19:30 ngày 03/12/2026" in message.text
    assert "- Học tập và làm theo tư tưởng, đạo đức, phong cách Hồ Chí Minh" in message.text
    assert "<li>Học tập và làm theo tư tưởng" in message.html


def test_html_escapes_untrusted_agenda_text() -> None:
    hostile = MEETING.model_copy(update={"agenda": ["<script>alert(1)</script>"]})
    html = TemplateRenderer().render("meeting_scheduled", {"meeting": hostile}).html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_deployment_overrides_a_template_by_file_name(tmp_path: Path) -> None:
    (tmp_path / "meeting_scheduled.subject.j2").write_text(
        "Mời họp: {{ meeting.cell_id }}", encoding="utf-8"
    )
    message = TemplateRenderer(tmp_path).render("meeting_scheduled", {"meeting": MEETING})
    assert message.subject == "Mời họp: nam-ngan.to-01"
    assert "Kính gửi" in message.text  # the other parts still come from the built-ins


def test_long_vietnamese_subject_survives_the_wire_format() -> None:
    subject = "[Chi bộ nam-ngan.to-01] Thông báo lịch sinh hoạt thường kỳ ngày 03/12/2026 " * 2
    raw = build_message(
        "a@chibo.local", "b@chibo.local", subject.strip(), "Kính gửi", "<p>Kính gửi</p>", "d-1"
    ).as_bytes()
    assert max(len(line) for line in raw.split(b"\n")) <= 998
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(parsed["Subject"]) == subject.strip()
    plain = parsed.get_body(("plain",))
    assert plain is not None
    assert plain.get_content() == "Kính gửi"
