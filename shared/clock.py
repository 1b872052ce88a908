"""An injectable clock, so that code never reads the wall clock behind a test's back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from shared.contract.types import EARLIEST_DAY, LATEST_DAY

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """The system clock moved by a number of seconds kept in a file, so that tests can move
    a running service's time forward. Only for test deployments (``CLOCK_OFFSET_FILE``)."""

    def __init__(self, offset_file: Path) -> None:
        self._file = offset_file

    def now(self) -> datetime:
        try:
            offset = float(self._file.read_text() or 0)
        except (FileNotFoundError, ValueError):
            offset = 0.0
        return datetime.now(UTC) + timedelta(seconds=offset)


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        self._now = at

    def now(self) -> datetime:
        return self._now

    def advance(self, by: timedelta) -> None:
        self._now += by

    def set(self, at: datetime) -> None:
        self._now = at


class ReportMonth:
    """A calendar month in Asia/Ho_Chi_Minh, as reports and their deadlines count it."""

    # The years a reader may ask for: the contract's (shared/contract/types.py). Outside
    # them a month's bounds can overflow: year 0 and 10000 are not datetimes, and 0001-01
    # starts in year 0 once in UTC, which the PostgreSQL driver cannot encode.
    FIRST_YEAR = EARLIEST_DAY.year
    LAST_YEAR = LATEST_DAY.year

    def __init__(self, label: str) -> None:
        year, month = (int(part) for part in label.split("-"))
        if not 1 <= month <= 12:
            raise ValueError(f"not a month: {label}")
        self.year, self.month, self.label = year, month, f"{year:04d}-{month:02d}"
        self.start = datetime(year, month, 1, tzinfo=LOCAL_TZ)
        self.end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=LOCAL_TZ)
        # "Before the 10th" of the next month: due at the 10th's midnight.
        self.report_due_at = self.end.replace(day=10)

    @classmethod
    def in_range(cls, label: str) -> bool:
        """Whether ``label`` (``YYYY-MM``, already checked for shape) names a month of
        ``FIRST_YEAR`` … ``LAST_YEAR``."""
        return cls.FIRST_YEAR <= int(label[:4]) <= cls.LAST_YEAR

    @classmethod
    def of(cls, at: datetime) -> ReportMonth:
        local = at.astimezone(LOCAL_TZ)
        return cls(f"{local.year:04d}-{local.month:02d}")

    def previous(self) -> ReportMonth:
        return ReportMonth.of(self.start - timedelta(days=1))

    def quarter_start(self) -> datetime:
        return self.start.replace(month=(self.month - 1) // 3 * 3 + 1)
