"""The ward's monthly report as a record: signed and sent once, on time or late."""

from __future__ import annotations

from datetime import datetime

from services.meetings.domain.errors import reject
from shared.clock import ReportMonth
from shared.contract import DomainEvent
from shared.contract.commands import SubmitWardReport
from shared.contract.events import WardReportSubmitted


def stream_id(ward_id: str, month: str) -> str:
    return f"ward-report-{ward_id}-{month}"


def submit(cmd: SubmitWardReport, history: list[DomainEvent], now: datetime) -> list[DomainEvent]:
    if history:
        raise reject(
            "already_submitted",
            f"Báo cáo tháng {cmd.month} của đảng bộ này đã được gửi.",
            f"The report of {cmd.ward_id} for {cmd.month} is already submitted.",
        )
    month = ReportMonth(cmd.month)
    if now < month.end:
        raise reject(
            "month_not_over",
            f"Tháng {month.month:02d}/{month.year} chưa kết thúc, chưa thể gửi báo cáo.",
            f"The month {cmd.month} is not over yet.",
        )
    return [
        WardReportSubmitted(
            ward_id=cmd.ward_id,
            month=month.label,
            submitted_at=now,
            due_at=month.report_due_at,
            on_time=now < month.report_due_at,
            submitted_by=cmd.submitted_by,
        )
    ]
