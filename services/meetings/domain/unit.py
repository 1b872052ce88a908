"""Units of the organisation above the cell: ward or commune, district, province."""

from __future__ import annotations

from services.meetings.domain.errors import reject
from shared.contract import DomainEvent
from shared.contract.commands import AppointUnitOfficial, RegisterUnit
from shared.contract.events import OfficialRole, UnitOfficialAppointed, UnitRegistered


def stream_id(unit_id: str) -> str:
    return f"unit-{unit_id}"


def register(cmd: RegisterUnit, history: list[DomainEvent]) -> list[DomainEvent]:
    if history:
        raise reject(
            "already_exists",
            f"Đơn vị {cmd.unit_id} đã được đăng ký.",
            f"Unit {cmd.unit_id} is already registered.",
        )
    return [UnitRegistered(ward_id=cmd.unit_id, **cmd.model_dump())]


def appoint(cmd: AppointUnitOfficial, history: list[DomainEvent]) -> list[DomainEvent]:
    if not any(isinstance(e, UnitRegistered) for e in history):
        raise reject(
            "unknown_unit",
            f"Đơn vị {cmd.unit_id} chưa được đăng ký.",
            f"Unit {cmd.unit_id} is not registered.",
        )
    if cmd.role == OfficialRole.WARD_MEMBER_IN_CHARGE:
        raise reject(
            "cell_office",
            "Đảng ủy viên phụ trách là chức trách đối với một chi bộ.",
            "The member in charge is an office of a cell (AppointOfficial).",
        )
    holders = {e.role: e.person_id for e in history if isinstance(e, UnitOfficialAppointed)}
    current = holders.get(cmd.role)
    if current == cmd.person_id:
        raise reject(
            "already_holds",
            "Đồng chí này đang giữ chức vụ đó.",
            "This person already holds the office.",
        )
    return [
        UnitOfficialAppointed(ward_id=cmd.unit_id, **cmd.model_dump(), replaces_person_id=current)
    ]
