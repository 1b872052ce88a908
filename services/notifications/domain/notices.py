"""The notification rules, pure: triggers and their priority, quiet hours, the stale rule,
lead times, months in Asia/Ho_Chi_Minh and the attendance rate. No I/O here."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from uuid import UUID, uuid5

from shared.clock import LOCAL_TZ
from shared.contract.events import Attendance, AttendanceEntry

_TRIGGER_NAMESPACE = UUID("0b7f3c1e-5a52-4a8e-9d55-2f8f1f6c9a01")


class Trigger(StrEnum):
    MEETING_SCHEDULED = "meeting_scheduled"
    MEETING_RESCHEDULED = "meeting_rescheduled"
    MEETING_CANCELLED = "meeting_cancelled"
    MEETING_REMINDER = "meeting_reminder"
    PETITION_RAISED = "petition_raised"
    PETITION_DEADLINE = "petition_deadline"
    PETITION_ESCALATED = "petition_escalated"
    PETITION_RESOLVED = "petition_resolved"
    PETITION_REOPENED = "petition_reopened"
    MEETING_MISSING = "meeting_missing"
    ATTENDANCE_LOW = "attendance_low"
    REPORT_SUBMITTED = "report_submitted"
    REPORT_LATE = "report_late"
    DIGEST = "digest"  # the day's low-priority notices of one person, in one message


class Priority(StrEnum):
    URGENT = "urgent"  # goes out at once, even in quiet hours
    NORMAL = "normal"  # held back by quiet hours
    LOW = "low"  # held back by quiet hours; folded into the daily digest when enabled


# Urgent: what loses its value if it waits until morning (a meeting moved, called off or
# about to start; a deadline about to pass). Everything else can wait for 06:00.
PRIORITY: dict[Trigger, Priority] = {
    Trigger.MEETING_SCHEDULED: Priority.NORMAL,
    Trigger.MEETING_RESCHEDULED: Priority.URGENT,
    Trigger.MEETING_CANCELLED: Priority.URGENT,
    Trigger.MEETING_REMINDER: Priority.URGENT,
    Trigger.PETITION_RAISED: Priority.NORMAL,
    Trigger.PETITION_DEADLINE: Priority.URGENT,
    Trigger.PETITION_ESCALATED: Priority.NORMAL,
    Trigger.PETITION_RESOLVED: Priority.LOW,
    Trigger.PETITION_REOPENED: Priority.NORMAL,
    Trigger.MEETING_MISSING: Priority.NORMAL,
    Trigger.ATTENDANCE_LOW: Priority.LOW,
    Trigger.REPORT_SUBMITTED: Priority.LOW,
    Trigger.REPORT_LATE: Priority.NORMAL,
    Trigger.DIGEST: Priority.NORMAL,
}

CHANNELS = ("email", "webhook", "log")


def choose_channels(
    wanted: tuple[str, ...], enabled: tuple[str, ...], default: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """(the channels to use, the wanted ones this deployment does not have). A person whose
    preference names only channels the deployment lacks (a gateway not wired up yet, or
    removed since) gets the default channels instead: a preference never silences them."""
    usable = [c for c in wanted if c in enabled]
    missing = [c for c in wanted if c not in enabled]
    if not usable:
        usable = [c for c in default if c in enabled]
    return usable, missing


@dataclass(frozen=True)
class Notice:
    """One trigger for a set of people: rendered once, recorded per (person, channel)."""

    trigger_id: UUID  # the event id, or a timer's derived id
    trigger: Trigger
    recipients: tuple[str, ...]  # person ids
    context: dict[str, object] = field(default_factory=dict)
    ref: str = ""  # the meeting, petition, cell or ward it is about (for operators)
    # The moment it is about, so a notice still waiting can be withdrawn when it no
    # longer holds: a meeting notice's start (for a cancellation, the start called off),
    # a deadline warning's deadline.
    about_at: datetime | None = None

    @property
    def priority(self) -> Priority:
        return PRIORITY[self.trigger]


def timer_trigger_id(kind: str, ref_id: str, due_at: datetime) -> UUID:
    """A fired timer's stable trigger id: the same timer always makes the same deliveries."""
    return uuid5(_TRIGGER_NAMESPACE, f"{kind}|{ref_id}|{due_at.isoformat()}")


@dataclass(frozen=True)
class QuietHours:
    """A nightly window in local time (start > end wraps past midnight); None: no window."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        text = text.strip()
        if not text or text.lower() in ("off", "none"):
            return None
        match = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", text)
        if not match:
            raise ValueError(f"quiet hours must look like 22:00-06:00, not {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        return cls(time(h1, m1), time(h2, m2))

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(LOCAL_TZ).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def release(self, at: datetime) -> datetime:
        """``at`` itself outside the window, else the window's end (local time)."""
        if not self.contains(at):
            return at
        local = at.astimezone(LOCAL_TZ)
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return end


@dataclass(frozen=True)
class Backoff:
    """How long a failed delivery or timer waits before its next attempt: doubling from
    ``base_s``, never more than ``max_s``."""

    base_s: float = 2.0
    max_s: float = 300.0

    def after(self, attempts: int) -> float:
        """The wait after the ``attempts``-th attempt failed."""
        return float(min(self.base_s * 2 ** (attempts - 1), self.max_s))


def send_not_before(priority: Priority, now: datetime, quiet: QuietHours | None) -> datetime:
    if priority is Priority.URGENT or quiet is None:
        return now
    return quiet.release(now)


def parse_local_time(text: str) -> time | None:
    """ "07:00" → 07:00; empty or "off" → None."""
    text = text.strip()
    if not text or text.lower() in ("off", "none"):
        return None
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not match:
        raise ValueError(f"a time of day must look like 07:00, not {text!r}")
    return time(int(match.group(1)), int(match.group(2)))


def next_local(at: datetime, when: time) -> datetime:
    """The next ``when`` (local time) strictly after ``at``."""
    local = at.astimezone(LOCAL_TZ)
    candidate = local.replace(hour=when.hour, minute=when.minute, second=0, microsecond=0)
    return candidate if candidate > local else candidate + timedelta(days=1)


def digest_trigger_id(recipient: str, channel: str, at: datetime) -> UUID:
    return uuid5(_TRIGGER_NAMESPACE, f"digest|{recipient}|{channel}|{at.isoformat()}")


def parse_leads(text: str) -> list[timedelta]:
    """Lead times like "48h,4h", "30m", "1d" (largest first); empty text: none."""
    units = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
    leads = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([dhms])", part)
        if not match:
            raise ValueError(f"a lead time must look like 48h, 30m or 1d, not {part!r}")
        leads.append(timedelta(seconds=float(match.group(1)) * units[match.group(2)]))
    return sorted(leads, reverse=True)


def is_stale(starts_at: datetime, now: datetime) -> bool:
    """A notice about a meeting that has already begun is history, not news: suppressed
    (backfilled months, a consumer far behind). See docs/notifications.md."""
    return starts_at <= now


# Notices that a later change of the meeting makes wrong: withdrawn (``superseded``) when
# the meeting is moved or called off before they went out.
SUPERSEDED_BY_CHANGE = (
    Trigger.MEETING_SCHEDULED,
    Trigger.MEETING_RESCHEDULED,
    Trigger.MEETING_REMINDER,
)
MEETING_NOTICES = (*SUPERSEDED_BY_CHANGE, Trigger.MEETING_CANCELLED)
# Petition notices a later change of the petition makes wrong: the deadline warning names
# a holder and a deadline that a resolution, an escalation or a reopening replaces. The
# others (raised, escalated, resolved, reopened) tell what happened, which stays true.
SUPERSEDED_BY_PETITION_CHANGE = (Trigger.PETITION_DEADLINE,)
# Checked against the directory once more when they come to be sent (outdated_reason).
CHECKED_AT_SEND = (*MEETING_NOTICES, *SUPERSEDED_BY_PETITION_CHANGE)


def outdated_reason(
    trigger: str,
    about_at: datetime | None,
    status: str | None,
    current_at: datetime | None,
    now: datetime,
) -> str | None:
    """Why a notice that is about to be sent must not be, or None. ``about_at`` is what the
    notice was recorded about (a meeting's start, a petition's deadline); ``status`` and
    ``current_at`` are the directory's meeting or petition now (its status, and its start
    or deadline; None when it is unknown).

    A meeting notice is ``superseded`` when the meeting has since been moved or called off
    (it would tell the old time after the change), ``stale`` when it has begun (the stale
    rule, at send time: quiet hours, retries and resends can hold a notice past the start).
    A deadline warning is ``superseded`` when the petition no longer has that deadline open
    (resolved, escalated, or reopened with another deadline), ``stale`` when the deadline
    has passed (marked overdue, or past by the clock)."""
    if trigger in MEETING_NOTICES:
        return _outdated_meeting_notice(trigger, about_at, status, current_at, now)
    if trigger in SUPERSEDED_BY_PETITION_CHANGE:
        return _outdated_deadline_warning(about_at, status, current_at, now)
    return None


def _outdated_meeting_notice(
    trigger: str,
    about_start: datetime | None,
    meeting_status: str | None,
    meeting_start: datetime | None,
    now: datetime,
) -> str | None:
    if about_start is None:
        return None
    if trigger != Trigger.MEETING_CANCELLED:
        if meeting_status == "cancelled":
            return "superseded"
        if meeting_start is not None and meeting_start != about_start:
            return "superseded"
        if meeting_status == "opened":
            return "stale"
    return "stale" if is_stale(about_start, now) else None


def _outdated_deadline_warning(
    about_deadline: datetime | None,
    petition_status: str | None,
    deadline: datetime | None,
    now: datetime,
) -> str | None:
    # Statuses: "open" (someone holds it, deadline_at running), "overdue" (that deadline
    # passed unanswered), "resolved". Warnings recorded before their deadline was kept
    # (migration 007) have no ``about_deadline``: only the status can judge them.
    if petition_status not in (None, "open", "overdue"):
        return "superseded"  # resolved: nothing left to warn of
    if about_deadline is not None and deadline is not None and deadline != about_deadline:
        return "superseded"  # escalated or reopened: another holder or another deadline
    if petition_status == "overdue":
        return "stale"
    if about_deadline is not None and about_deadline <= now:
        return "stale"  # the escalation speaks now
    return None


def local_month(at: datetime) -> str:
    return at.astimezone(LOCAL_TZ).strftime("%Y-%m")


def next_month(month: str) -> str:
    year, mon = (int(p) for p in month.split("-"))
    return f"{year + mon // 12}-{mon % 12 + 1:02d}"


def month_day_start(month: str, day: int) -> datetime:
    """00:00 Asia/Ho_Chi_Minh on ``day`` of ``month``."""
    year, mon = (int(p) for p in month.split("-"))
    return datetime(year, mon, day, tzinfo=LOCAL_TZ)


def report_due_at(month: str) -> datetime:
    """The ward's report of ``month`` is due before the 10th of the next month."""
    return month_day_start(next_month(month), 10)


def meeting_check_at(month: str, due_day: int) -> datetime:
    """The regular meeting must be held by the end of ``due_day``: checked at the next 00:00.
    A day the month does not have means its last day (timers set before MEETING_MISSING_DAY
    was limited to 1..28 may carry 29-31)."""
    year, mon = (int(p) for p in month.split("-"))
    day = min(due_day, calendar.monthrange(year, mon)[1])
    return month_day_start(month, day) + timedelta(days=1)


def attendance_rate(roll_call: list[AttendanceEntry]) -> float | None:
    """Present over everyone not exempt (exempt members are left out); None if nobody counts."""
    counted = [e for e in roll_call if e.status is not Attendance.EXEMPT]
    if not counted:
        return None
    return sum(1 for e in counted if e.status is Attendance.PRESENT) / len(counted)
