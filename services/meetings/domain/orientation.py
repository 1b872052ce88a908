"""The ward's monthly orientation: the brief and topics it sends its cells before the 1st."""

from __future__ import annotations

from datetime import date, datetime

from services.meetings.domain.errors import reject
from shared.clock import LOCAL_TZ
from shared.contract import DomainEvent
from shared.contract.commands import IssueOrientation
from shared.contract.events import OrientationIssued


def stream_id(orientation_id: str) -> str:
    return f"orientation-{orientation_id}"


def issue(cmd: IssueOrientation, history: list[DomainEvent], now: datetime) -> list[DomainEvent]:
    if history:
        raise reject(
            "already_exists",
            "Định hướng sinh hoạt tháng này đã được ban hành.",
            f"Orientation {cmd.orientation_id} is already issued.",
        )
    year, month = (int(part) for part in cmd.month.split("-"))
    start = date(year, month, 1)
    after = date(year + month // 12, month % 12 + 1, 1)
    today = now.astimezone(LOCAL_TZ).date()
    if today >= after:
        raise reject(
            "month_over",
            f"Tháng {month:02d}/{year} đã kết thúc.",
            f"The month {cmd.month} is over.",
        )
    return [OrientationIssued(**cmd.model_dump(), issued_at=now, on_time=today < start)]
