"""The petition (kiến nghị) aggregate and the ladder it climbs.

A petition is held by one level at a time, with a deadline from that level's configured
period. It is resolved there, or sent up: by hand when it is beyond the level's
authority, or by the deadline scheduler when the deadline passes. At the top of the
ladder a missed deadline only marks it overdue. The ladder and the recurring window are
data (design invariant 9).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.meetings.domain.cell import Cell
from services.meetings.domain.errors import reject
from shared.contract import DomainEvent
from shared.contract.commands import (
    AcknowledgePetition,
    EscalateOverduePetition,
    EscalatePetition,
    RaisePetition,
    ReopenPetition,
    ResolvePetition,
)
from shared.contract.events import (
    EscalationReason,
    PetitionAcknowledged,
    PetitionEscalated,
    PetitionMarkedOverdue,
    PetitionRaised,
    PetitionReopened,
    PetitionResolved,
)

# The recurring key, shared with the reports (their recurring topics).
from shared.places import place_key as place_key

# An event names at most this many earlier petitions about the same place, the latest:
# enough to follow the thread, without events growing with every recurrence.
MAX_SIMILAR_LISTED = 10


def stream_id(petition_id: str) -> str:
    return f"petition-{petition_id}"


@dataclass(frozen=True)
class Level:
    name: str
    deadline: timedelta


@dataclass(frozen=True)
class PetitionPolicy:
    """The escalation ladder, from the cell up, and the recurring window."""

    ladder: tuple[Level, ...]
    recurring_window: timedelta

    @classmethod
    def parse(cls, ladder: str, recurring_window_days: int) -> PetitionPolicy:
        """``"cell:7,ward:15,district:30,province:45"``: level names and deadline days."""
        levels = []
        for part in ladder.split(","):
            name, _, days = part.strip().partition(":")
            levels.append(Level(name.strip(), timedelta(days=float(days))))
        if len(levels) < 2 or len({lv.name for lv in levels}) != len(levels):
            raise ValueError(f"a ladder needs two or more distinct levels: {ladder!r}")
        return cls(tuple(levels), timedelta(days=recurring_window_days))

    @property
    def level_names(self) -> list[str]:
        return [lv.name for lv in self.ladder]

    def index(self, level: str) -> int:
        """The level's rung. A petition held at a level no longer configured (the district
        level removed after the 2025 reform) is refused, petition by petition, until an
        operator moves it: the ladder is data and may change under open petitions."""
        names = self.level_names
        if level not in names:
            raise reject(
                "unknown_level",
                f"Cấp đang giữ kiến nghị ({level}) không còn trong thang chuyển cấp đã cấu hình.",
                f"The petition is held at level {level!r}, which is not in the configured"
                f" ladder {names}.",
                level=level,
                ladder=names,
            )
        return names.index(level)


@dataclass
class Petition:
    petition_id: str
    raised: PetitionRaised | None = None
    level: str = ""
    holder_id: str | None = None
    deadline_at: datetime | None = None
    resolved: bool = False
    overdue_at_top: bool = False
    acknowledged_levels: frozenset[str] = frozenset()

    @classmethod
    def replay(cls, petition_id: str, events: list[DomainEvent]) -> Petition:
        petition = cls(petition_id)
        for event in events:
            petition.apply(event)
        return petition

    def apply(self, event: DomainEvent) -> None:
        match event:
            case PetitionRaised():
                self.raised = event
                self.level, self.holder_id = event.level, event.holder_id
                self.deadline_at = event.deadline_at
            case PetitionAcknowledged():
                self.acknowledged_levels |= {event.level}
            case PetitionResolved():
                self.resolved, self.deadline_at = True, None
            case PetitionEscalated():
                self.level, self.holder_id = event.to_level, event.to_holder_id
                self.deadline_at = event.deadline_at
            case PetitionMarkedOverdue():
                self.overdue_at_top, self.deadline_at = True, None
            case PetitionReopened():
                self.resolved, self.deadline_at = False, event.deadline_at

    # -- decisions ---------------------------------------------------------------------
    def raise_(
        self,
        cmd: RaisePetition,
        policy: PetitionPolicy,
        now: datetime,
        similar: list[str],
        cell: Cell,
    ) -> list[DomainEvent]:
        if self.raised is not None:
            raise reject(
                "already_exists",
                f"Kiến nghị {cmd.petition_id} đã được ghi nhận.",
                f"Petition {cmd.petition_id} is already raised.",
            )
        # The cell holds it first, and its officials are told: it must be the ward's own.
        cell.require_registered(cmd.ward_id)
        first = policy.ladder[0]
        return [
            PetitionRaised(
                **cmd.model_dump(),
                raised_at=now,
                level=first.name,
                holder_id=cmd.cell_id,
                deadline_at=now + first.deadline,
                recurring=bool(similar),
                similar_petition_ids=similar[-MAX_SIMILAR_LISTED:],
            )
        ]

    def acknowledge(self, cmd: AcknowledgePetition, now: datetime) -> list[DomainEvent]:
        self._require_open(cmd.ward_id)
        if self.level in self.acknowledged_levels:
            raise reject(
                "already_acknowledged",
                "Kiến nghị đã được tiếp nhận ở cấp này.",
                "The petition is already acknowledged at this level.",
            )
        return [
            PetitionAcknowledged(
                petition_id=cmd.petition_id, ward_id=cmd.ward_id, level=self.level,
                acknowledged_at=now,
            )
        ]  # fmt: skip

    def resolve(self, cmd: ResolvePetition, now: datetime) -> list[DomainEvent]:
        self._require_open(cmd.ward_id)
        return [
            PetitionResolved(
                petition_id=cmd.petition_id, ward_id=cmd.ward_id, level=self.level,
                holder_id=self.holder_id or self.level, response=cmd.response, resolved_at=now,
            )
        ]  # fmt: skip

    def escalate(
        self, cmd: EscalatePetition, policy: PetitionPolicy, now: datetime, chain: list[str]
    ) -> list[DomainEvent]:
        self._require_open(cmd.ward_id)
        if policy.index(self.level) == len(policy.ladder) - 1:
            raise reject(
                "top_of_ladder",
                "Kiến nghị đang ở cấp cao nhất, không thể chuyển lên nữa.",
                "The petition is at the top of the ladder.",
            )
        return [self._up(policy, now, chain, EscalationReason.BEYOND_AUTHORITY, cmd.note, None)]

    def escalate_overdue(
        self,
        cmd: EscalateOverduePetition,
        policy: PetitionPolicy,
        now: datetime,
        chain: list[str],
    ) -> list[DomainEvent]:
        """Nothing if the deadline is no longer this one, or has not passed: the scheduler
        may be late, repeated, or racing a resolution, and then it must change nothing."""
        if (
            self.raised is None
            or self.resolved
            or self.deadline_at is None
            or self.deadline_at != cmd.deadline_at
            or now < self.deadline_at
        ):
            return []
        if policy.index(self.level) == len(policy.ladder) - 1:
            return [
                PetitionMarkedOverdue(
                    petition_id=cmd.petition_id, ward_id=self.raised.ward_id, level=self.level,
                    missed_deadline_at=self.deadline_at, marked_at=now,
                )
            ]  # fmt: skip
        return [self._up(policy, now, chain, EscalationReason.DEADLINE, None, self.deadline_at)]

    def reopen(
        self, cmd: ReopenPetition, policy: PetitionPolicy, now: datetime
    ) -> list[DomainEvent]:
        self._require_raised(cmd.ward_id)
        if not self.resolved:
            raise reject(
                "not_resolved",
                "Chỉ mở lại kiến nghị đã được giải quyết.",
                "Only a resolved petition can be reopened.",
            )
        level = policy.ladder[policy.index(self.level)]
        return [
            PetitionReopened(
                petition_id=cmd.petition_id, ward_id=cmd.ward_id, level=self.level,
                reason=cmd.reason, deadline_at=now + level.deadline, reopened_at=now,
            )
        ]  # fmt: skip

    # -- helpers -----------------------------------------------------------------------
    def _up(
        self,
        policy: PetitionPolicy,
        now: datetime,
        chain: list[str],
        reason: EscalationReason,
        note: str | None,
        missed: datetime | None,
    ) -> PetitionEscalated:
        assert self.raised is not None
        to = policy.index(self.level) + 1
        # The holders above the cell: the ward, then the ward's ancestors, nearest first.
        holders = [self.raised.ward_id, *chain]
        return PetitionEscalated(
            petition_id=self.petition_id,
            ward_id=self.raised.ward_id,
            from_level=self.level,
            to_level=policy.ladder[to].name,
            to_holder_id=holders[to - 1] if to - 1 < len(holders) else None,
            reason=reason,
            note=note,
            missed_deadline_at=missed,
            deadline_at=now + policy.ladder[to].deadline,
            escalated_at=now,
        )

    def _require_raised(self, ward_id: str) -> PetitionRaised:
        if self.raised is None:
            raise reject(
                "unknown_petition",
                f"Không có kiến nghị {self.petition_id}.",
                f"No petition {self.petition_id}.",
            )
        if self.raised.ward_id != ward_id:
            raise reject(
                "wrong_ward",
                "Kiến nghị thuộc đảng bộ khác.",
                "The petition belongs to another ward.",
            )
        return self.raised

    def _require_open(self, ward_id: str) -> None:
        self._require_raised(ward_id)
        if self.resolved:
            raise reject(
                "already_resolved",
                "Kiến nghị đã được giải quyết.",
                "The petition is already resolved.",
            )
