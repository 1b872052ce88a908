"""The cell (chi bộ) and its roll of members: who may be called in a roll call, and who is
exempt on a given day."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from services.meetings.domain.errors import reject
from shared.contract import DomainEvent
from shared.contract.commands import (
    AdmitMember,
    AppointOfficial,
    ExemptMember,
    RegisterCell,
    TransferMember,
)
from shared.contract.events import (
    CellRegistered,
    MemberAdmitted,
    MemberExempted,
    MemberStatus,
    MemberTransferredOut,
    OfficialAppointed,
    OfficialRole,
)


def stream_id(cell_id: str) -> str:
    return f"cell-{cell_id}"


@dataclass(frozen=True)
class Exemption:
    start: date
    end: date | None
    reason: str

    def covers(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


@dataclass
class Member:
    member_id: str
    full_name: str
    status: MemberStatus
    exemptions: list[Exemption] = field(default_factory=list)

    def exempt_on(self, day: date) -> bool:
        return any(e.covers(day) for e in self.exemptions)


@dataclass
class Cell:
    cell_id: str
    registered: CellRegistered | None = None
    members: dict[str, Member] = field(default_factory=dict)
    officials: dict[OfficialRole, str] = field(default_factory=dict)  # role -> person id

    @classmethod
    def replay(cls, cell_id: str, events: list[DomainEvent]) -> Cell:
        cell = cls(cell_id)
        for event in events:
            cell.apply(event)
        return cell

    @property
    def roll_calls(self) -> int:
        return self.registered.roll_calls if self.registered else 1

    def apply(self, event: DomainEvent) -> None:
        match event:
            case CellRegistered():
                self.registered = event
            case MemberAdmitted():
                self.members[event.member_id] = Member(
                    event.member_id, event.full_name, event.status
                )
            case MemberExempted():
                self.members[event.member_id].exemptions.append(
                    Exemption(event.exempt_from, event.exempt_until, event.reason)
                )
            case MemberTransferredOut():
                self.members.pop(event.member_id, None)
            case OfficialAppointed():
                self.officials[event.role] = event.person_id

    # -- decisions ---------------------------------------------------------------------
    def register(self, cmd: RegisterCell) -> list[DomainEvent]:
        if self.registered is not None:
            raise reject(
                "already_exists",
                f"Chi bộ {cmd.cell_id} đã được đăng ký.",
                f"Cell {cmd.cell_id} is already registered.",
            )
        return [CellRegistered(**cmd.model_dump())]

    def admit(self, cmd: AdmitMember) -> list[DomainEvent]:
        self.require_registered(cmd.ward_id)
        if cmd.member_id in self.members:
            raise reject(
                "already_a_member",
                f"Đảng viên {cmd.member_id} đã sinh hoạt tại chi bộ này.",
                f"Member {cmd.member_id} is already in this cell.",
            )
        return [MemberAdmitted(**cmd.model_dump())]

    def exempt(self, cmd: ExemptMember) -> list[DomainEvent]:
        self.require_registered(cmd.ward_id)
        self._require_member(cmd.member_id)
        if cmd.exempt_until is not None and cmd.exempt_until < cmd.exempt_from:
            raise reject(
                "invalid_period",
                "Ngày kết thúc miễn sinh hoạt phải sau ngày bắt đầu.",
                "The exemption must end after it starts.",
            )
        return [MemberExempted(**cmd.model_dump())]

    def transfer_out(self, cmd: TransferMember) -> list[DomainEvent]:
        self.require_registered(cmd.ward_id)
        self._require_member(cmd.member_id)
        if cmd.to_cell_id == self.cell_id:
            raise reject(
                "same_cell",
                "Không thể chuyển sinh hoạt đến chính chi bộ này.",
                "A member cannot be transferred to the same cell.",
            )
        return [MemberTransferredOut(**cmd.model_dump())]

    def appoint(self, cmd: AppointOfficial) -> list[DomainEvent]:
        self.require_registered(cmd.ward_id)
        if cmd.role != OfficialRole.WARD_MEMBER_IN_CHARGE:
            self._require_member(cmd.person_id)  # the secretary and deputy are the cell's own
        current = self.officials.get(cmd.role)
        if current == cmd.person_id:
            raise reject(
                "already_holds",
                "Đồng chí này đang giữ chức vụ đó.",
                "This person already holds the office.",
            )
        return [OfficialAppointed(**cmd.model_dump(), replaces_person_id=current)]

    def require_registered(self, ward_id: str) -> None:
        """The cell is registered, in this ward: what every command naming it needs."""
        if self.registered is None:
            raise reject(
                "unknown_cell",
                f"Chi bộ {self.cell_id} chưa được đăng ký.",
                f"Cell {self.cell_id} is not registered.",
            )
        if self.registered.ward_id != ward_id:
            raise reject(
                "wrong_ward",
                f"Chi bộ {self.cell_id} không thuộc đảng bộ {ward_id}.",
                f"Cell {self.cell_id} does not belong to ward {ward_id}.",
            )

    def _require_member(self, member_id: str) -> None:
        if member_id not in self.members:
            raise reject(
                "not_a_member",
                f"Đảng viên {member_id} không sinh hoạt tại chi bộ {self.cell_id}.",
                f"Member {member_id} is not in cell {self.cell_id}.",
                member_id=member_id,
            )
