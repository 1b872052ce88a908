"""The petition (kiến nghị) aggregate and the ladder it climbs.

A petition is held by one level at a time, with a deadline from that level's configured
period. It is resolved there, or sent up: by hand when it is beyond the level's
authority, or by the deadline scheduler when the deadline passes. At the top of the
ladder a missed deadline only marks it overdue. The ladder and the recurring window are
data (design invariant 9).

Who holds it is a unit: the cell first, then the petition's own ward (whatever its level
is called: ward, commune), then, for each rung above, the nearest of the ward's
ancestors whose level has the rung's name. A rung no unit of the tree holds (a two-tier
tree has no district) is passed over; with no held rung above, the current one is the
top. Only the holder's committee, or a unit above it, acts on the petition (Quy định 11).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.meetings.domain.cell import Cell
from services.meetings.domain.errors import DomainRejection, reject
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
class Unit:
    """A unit above the ward, as the organisation tree has it. ``level`` is None for a
    parent named by its child but not registered yet (units arrive in any order)."""

    unit_id: str
    level: str | None


@dataclass(frozen=True)
class Scope:
    """Where the one acting may act: its unit and every unit below it (``system``:
    anywhere), as a token's scope says (shared/auth.py)."""

    level: str
    unit: str | None


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

    def acknowledge(
        self, cmd: AcknowledgePetition, now: datetime, by: Scope, chain: Sequence[Unit]
    ) -> list[DomainEvent]:
        self._require_open(cmd.ward_id, by, chain)
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

    def resolve(
        self, cmd: ResolvePetition, now: datetime, by: Scope, chain: Sequence[Unit]
    ) -> list[DomainEvent]:
        self._require_open(cmd.ward_id, by, chain)
        return [
            PetitionResolved(
                petition_id=cmd.petition_id, ward_id=cmd.ward_id, level=self.level,
                holder_id=self.holder_id or self.level, response=cmd.response, resolved_at=now,
            )
        ]  # fmt: skip

    def escalate(
        self,
        cmd: EscalatePetition,
        policy: PetitionPolicy,
        now: datetime,
        chain: Sequence[Unit],
        by: Scope,
    ) -> list[DomainEvent]:
        self._require_open(cmd.ward_id, by, chain)
        up = self._next_holder(policy, chain)
        if up is None:
            raise reject(
                "top_of_ladder",
                "Kiến nghị đang ở cấp cao nhất (không có đơn vị cấp trên nào để chuyển lên).",
                "The petition is at the top of the ladder: no unit above holds a higher level.",
                level=self.level,
            )
        return [self._up(policy, now, up, EscalationReason.BEYOND_AUTHORITY, cmd.note, None)]

    def escalate_overdue(
        self,
        cmd: EscalateOverduePetition,
        policy: PetitionPolicy,
        now: datetime,
        chain: Sequence[Unit],
        by: Scope,
    ) -> list[DomainEvent]:
        """Nothing if the deadline is no longer this one, or has not passed: the scheduler
        may be late, repeated, or racing a resolution, and then it must change nothing."""
        if self.raised is not None:
            self._require_held_within(by, chain)
        if (
            self.raised is None
            or self.resolved
            or self.deadline_at is None
            or self.deadline_at != cmd.deadline_at
            or now < self.deadline_at
        ):
            return []
        up = self._next_holder(policy, chain)
        if up is None:
            return [
                PetitionMarkedOverdue(
                    petition_id=cmd.petition_id, ward_id=self.raised.ward_id, level=self.level,
                    missed_deadline_at=self.deadline_at, marked_at=now,
                )
            ]  # fmt: skip
        return [self._up(policy, now, up, EscalationReason.DEADLINE, None, self.deadline_at)]

    def reopen(
        self,
        cmd: ReopenPetition,
        policy: PetitionPolicy,
        now: datetime,
        by: Scope,
        chain: Sequence[Unit],
    ) -> list[DomainEvent]:
        self._require_raised(cmd.ward_id)
        self._require_held_within(by, chain)
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
    def _next_holder(self, policy: PetitionPolicy, chain: Sequence[Unit]) -> tuple[int, str] | None:
        """The next rung up that a unit holds, and that unit; None at the top. The rung
        after the cell is the petition's own ward, whatever the ladder calls it. A rung
        above is held by the nearest unit of that level above the current holder among
        the ward's ancestors (nearest first); a rung no unit has is passed over, so a
        district ladder on a two-tier tree goes from the ward to the province."""
        assert self.raised is not None
        here = policy.index(self.level)  # unknown_level when the ladder lost it
        if here == 0:
            return 1, self.raised.ward_id
        above = list(chain)
        for n, unit in enumerate(above):
            if unit.unit_id == self.holder_id:
                above = above[n + 1 :]
                break
        for to in range(here + 1, len(policy.ladder)):
            name = policy.ladder[to].name
            holder = next((u.unit_id for u in above if u.level == name), None)
            if holder is not None:
                return to, holder
        return None

    def _up(
        self,
        policy: PetitionPolicy,
        now: datetime,
        up: tuple[int, str],
        reason: EscalationReason,
        note: str | None,
        missed: datetime | None,
    ) -> PetitionEscalated:
        assert self.raised is not None
        to, holder = up
        return PetitionEscalated(
            petition_id=self.petition_id,
            ward_id=self.raised.ward_id,
            from_level=self.level,
            to_level=policy.ladder[to].name,
            to_holder_id=holder,
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

    def _require_held_within(self, by: Scope, chain: Sequence[Unit]) -> None:
        """The one acting must hold the petition or stand above its holder: a cell's
        secretary acts on what the cell holds, a ward's officials on what the ward or one
        of its cells holds, a unit above on what it or a unit below it holds. ``chain``
        is needed only for a scope above the ward: without it no unit above the ward is
        known, and only the cell and the ward can be matched."""
        assert self.raised is not None
        if by.level == "system":
            return
        line = [self.raised.cell_id, self.raised.ward_id, *(u.unit_id for u in chain)]
        if self.holder_id in line:
            at_or_above = line[line.index(self.holder_id) :]
        else:  # escalated when no unit held the level (older events): some unit above
            at_or_above = line[2:]
        if by.unit is None or by.unit not in at_or_above:
            raise DomainRejection(
                "forbidden_scope",
                "Tài khoản không có quyền xử lý kiến nghị này; kiến nghị đang do"
                f" {f'đơn vị {self.holder_id}' if self.holder_id else 'đơn vị cấp trên'}"
                f" giữ (cấp {self.level}).",
                f"The token's scope does not cover the unit holding this petition"
                f" ({self.level}: {self.holder_id}).",
                {"level": self.level, "holder_id": self.holder_id},
                status=403,
            )

    def _require_open(self, ward_id: str, by: Scope, chain: Sequence[Unit]) -> None:
        self._require_raised(ward_id)
        self._require_held_within(by, chain)
        if self.resolved:
            raise reject(
                "already_resolved",
                "Kiến nghị đã được giải quyết.",
                "The petition is already resolved.",
            )
