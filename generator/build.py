"""Everything generated for one seed, configuration and month, in one call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from generator.commands import PlannedCommand, build_commands
from generator.expected import expected_figures
from generator.model import District, GeneratorConfig, build_district
from generator.month import Month, generate_month


@dataclass(frozen=True)
class Generated:
    district: District
    month: Month
    commands: list[PlannedCommand]
    expected: dict[str, Any]


def generate(config: GeneratorConfig, year: int, month: int) -> Generated:
    district = build_district(config, date(year, month, 1))
    month_obj = generate_month(district, year, month)
    commands = build_commands(district, month_obj)
    return Generated(district, month_obj, commands, expected_figures(district, month_obj, commands))
