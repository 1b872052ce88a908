"""Units of the organisation above the cell: ward or commune, district, province."""

from __future__ import annotations

from services.meetings.domain.errors import reject
from shared.contract import DomainEvent
from shared.contract.commands import RegisterUnit
from shared.contract.events import UnitRegistered


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
