"""The walking-skeleton demo: a month of regular cell meetings for a few wards, sent
through the real stack, then read back from the reports view and the SMTP sink."""

from __future__ import annotations

import mailbox
from dataclasses import dataclass
from datetime import date, datetime, time

import httpx

from shared.clock import LOCAL_TZ

# Ward sizes from the source articles (see ../shared/domain.md).
DEMO_WARDS = {
    "nam-ngan": 11,  # Nam Ngạn ward, Thanh Hóa city
    "thanh-minh": 19,  # Thanh Minh commune, Điện Biên Phủ
    "thong-nhat": 19,  # Thống Nhất ward, Pleiku
}


@dataclass(frozen=True)
class PlannedMeeting:
    ward_id: str
    cell_id: str
    meeting_id: str
    body: dict[str, object]


def next_month(today: date) -> date:
    return date(today.year + (today.month == 12), today.month % 12 + 1, 1)


def plan_month(month: date) -> list[PlannedMeeting]:
    """Each cell's regular meeting on the 3rd at 19:30 local time (seed 002's rhythm)."""
    start = datetime.combine(month.replace(day=3), time(19, 30), tzinfo=LOCAL_TZ)
    planned = []
    for ward_id, cells in DEMO_WARDS.items():
        for n in range(1, cells + 1):
            cell_id = f"{ward_id}.to-{n:02d}"
            meeting_id = f"{cell_id}.{month:%Y-%m}.thuong-ky"
            planned.append(
                PlannedMeeting(
                    ward_id,
                    cell_id,
                    meeting_id,
                    {
                        "meeting_id": meeting_id,
                        "ward_id": ward_id,
                        "cell_id": cell_id,
                        "kind": "regular",
                        "scheduled_start": start.isoformat(),
                        "agenda": [
                            "Quán triệt định hướng sinh hoạt tháng của Đảng ủy phường",
                            "Kiểm điểm việc thực hiện nghị quyết tháng trước",
                            "Tiếp nhận kiến nghị của cử tri",
                        ],
                    },
                )
            )
    return planned


def send(client: httpx.Client, meetings_url: str, meeting: PlannedMeeting, token: str) -> int:
    """Schedule one meeting; the meeting id doubles as the idempotency key, so a rerun is safe."""
    response = client.post(
        f"{meetings_url}/v1/meetings",
        json=meeting.body,
        headers={
            "Idempotency-Key": f"demo:{meeting.meeting_id}",
            "Authorization": f"Bearer {token}",
        },
    )
    return response.status_code


def report_counts(client: httpx.Client, reports_url: str) -> dict[str, int]:
    wards = client.get(f"{reports_url}/v1/wards").json()["wards"]
    return {w["ward_id"]: w["meetings_scheduled"] for w in wards}


def delivered_recipients(maildir_path: str) -> list[str]:
    return [str(m["To"]) for m in mailbox.Maildir(maildir_path, create=False)]
