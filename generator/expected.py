"""The figures a correct monthly report must show for the generated month, per ward and for
the whole district, computed from the generated data model alone: no events are replayed
and no service code is used, so the figures can check the services.

Shape of ``expected.json`` (all counts are integers; rates are fractions rounded to 4
places, ``null`` when nothing was counted)::

    {
      "schema": "chibo-generator-expected/1",
      "seed": 2026, "month": "2026-10", "timezone": "Asia/Ho_Chi_Minh",
      "id_prefix": "demo2026", "attendance_target": 0.9,
      "units": [{"unit_id": "demo2026.thanh-hoa", "level": "province",
                 "name": "Đảng bộ tỉnh Thanh Hóa", "parent_id": null}, ...],
      "commands": {"total": 11694, "by_type": {"AdmitMember": 7822, ...}},
      "events": {"total": 11694, "by_type": {"MemberAdmitted": 7822, ...}},
      "district": FIGURES,                  # the whole district: the sum of the wards
      "wards": [{"ward_id": "demo2026.nam-ngan", "name": "Đảng bộ phường Nam Ngạn",
                 **FIGURES, "cells_detail": [CELL, ...]}, ...]
    }

    FIGURES = {
      "cells": 11,
      "members": {"total": 290, "probationary": 12, "exempt": 20, "counted": 270},
      "regular_meetings": {
        "scheduled": 11, "held_on_planned_day": 9, "held_late": 1, "not_held": 1,
        "not_held_cells": ["Chi bộ phố Lê Lai 2"],  # cancelled too; in "district" the
                                                   # names end with " (phường Nam Ngạn)"
        "cancelled": 1,                                        # a part of not_held
        "cancelled_reasons": [{"cell": "Chi bộ phố Lê Lai 2", "reason": "Mưa bão, ..."}],
        "rescheduled": 1, "supervisor_present": 6},
      "thematic_meetings": {"scheduled": 4, "held": 4},
      "attendance": {                      # the first roll call of held regular meetings
        "members_counted": 245,            # counted by those roll calls (see below)
        "present_first_roll_call": 229, "absent_excused": 11, "absent_unexcused": 5,
        "rate": 0.9347,                    # present_first_roll_call / members_counted
        "two_roll_call_cells_held": 4,     # with their second roll call in
        "members_counted_two_roll_calls": 90,
        "present_second_roll_call": 87, "present_both_roll_calls": 85,
        "cells_below_target": 2, "cells_below_target_names": ["Chi bộ phố ..."]},
      "resolutions": {"adopted": 12, "tasks_assigned": 25, "tasks_completed": 9},
      "petitions": {
        "raised": 14, "by_category": {"land": 2, "roads_infrastructure": 5, ...},
        "recurring": 1,                    # same category and place as an earlier one
        "recurring_topics": [{"ward": "phường Nam Ngạn", "category": "environment",
                              "place": "...", "times": 2}],
        "acknowledged": 8, "resolved_at_cell": 5, "reopened": 0,
        "escalated_to_ward": 2, "open_at_cell": 7}
    }

    CELL = {"cell_id", "name", "meeting_day", "roll_calls", "members", "exempt", "counted",
            "regular": "held_on_planned_day" | "held_late" | "not_held" | "cancelled",
            "held_on": "2026-10-03" | null, "present_first_roll_call",
            "present_second_roll_call" | null, "present_both_roll_calls" | null,
            "rate" | null, "below_target": bool, "thematic_held": bool,
            "supervisor_present": bool, "petitions_raised"}

Definitions:
- Members are those on a cell's roll at the end of the month: the roll the month began
  with, less those who moved to another cell during it, plus those who moved in or were
  admitted during it (``month.roll_changes``). ``exempt`` are those of them exempt on the
  day of the regular meeting (its planned day when it was not held).
- ``counted`` is who had to attend the regular meeting: when it was held, the members its
  first roll call counted as present, excused or unexcused (the roll on that day, exempt
  members apart: one who moved or was admitted after it is not in it); when it was not
  held, total − exempt. The attendance rate is present over that.
- A regular meeting is held on the planned day when it opened on the cell's meeting day,
  late when it opened on a later day; not held when it never opened (``cancelled`` are
  the not-held ones with a cancellation and its reason). held + late + not held = cells.
- Attendance is taken from regular meetings only (thematic ones are counted, not rated).
  A cell is below target when its rate is under 90 %.
- ``resolutions`` and ``tasks`` count the cell's own meetings, regular and thematic (a
  cell committee's would not count: it agrees the agenda, the cell adopts); a task is
  completed when it was completed within the month.
- The two-roll-call figures are over the held regular meetings of cells that call the
  roll twice and whose second roll call is in.
- Petitions: ``resolved_at_cell`` counts those whose last word in the month is a
  resolution at the cell (a reopened one is open again, and counted in ``reopened`` and
  ``open_at_cell``); ``escalated_to_ward`` were sent up by hand as beyond the cell's
  authority (to the ward, whatever its level is called); ``recurring`` counts the
  petitions that repeat the category and place (case, spacing and punctuation aside) of
  an earlier petition in the same ward: in a generated month, an earlier one this month.
  ``recurring_topics`` are their topics, with the ward, the place as first written and
  how many petitions the month raised on it. The deadline scheduler will move the
  still-open petitions up a level once their deadlines (from the time of publishing)
  pass: the figures are as of publishing.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from datetime import date
from typing import Any

from generator.commands import PlannedCommand, expected_events
from generator.model import Cell, District, Member, Ward
from generator.month import (
    CATEGORIES,
    EXCUSED,
    LOCAL_TZ,
    PRESENT,
    UNEXCUSED,
    Meeting,
    Month,
    Petition,
)

SCHEMA = "chibo-generator-expected/1"
TARGET = 0.9


def _rate(present: int, counted: int) -> float | None:
    return round(present / counted, 4) if counted else None


def _place(place: str) -> str:
    """A place as the recurring rule compares it: case, spacing and punctuation aside."""
    text = unicodedata.normalize("NFC", place).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def _month_end_roll(cell: Cell, month: Month) -> list[Member]:
    gone = {c.member.member_id for c in month.roll_changes if c.from_cell == cell.cell_id}
    came = [c.member for c in month.roll_changes if c.to_cell == cell.cell_id]
    return [m for m in cell.members if m.member_id not in gone] + came


def _cell_figures(ward: Ward, cell: Cell, month: Month, meetings: list[Meeting]) -> dict[str, Any]:
    regular = next(m for m in meetings if m.kind == "regular")
    thematic = [m for m in meetings if m.kind == "thematic"]
    own = [m for m in meetings if m.kind != "committee"]  # the cell's own resolutions
    roll = _month_end_roll(cell, month)
    planned = date(month.year, month.month, cell.meeting_day)
    held_on = regular.opened_at.astimezone(LOCAL_TZ).date() if regular.opened_at else None
    day = held_on or planned
    exempt = sum(1 for m in roll if m.exempt_on(day))
    if held_on is None:
        status = "cancelled" if regular.cancel_reason else "not_held"
    else:
        status = "held_on_planned_day" if held_on == planned else "held_late"
    first = {e.member_id: e.status for e in regular.roll_call}
    present_first = sum(1 for s in first.values() if s == PRESENT)
    second_present = both = None
    if held_on is not None and cell.roll_calls == 2 and regular.second_roll_call is not None:
        second = {e.member_id: e.status for e in regular.second_roll_call}
        second_present = sum(1 for s in second.values() if s == PRESENT)
        both = sum(1 for mid, s in second.items() if s == PRESENT and first.get(mid) == PRESENT)
    if held_on is not None:  # who the roll call counted: the roll that day, exempt apart
        counted = sum(1 for s in first.values() if s in (PRESENT, EXCUSED, UNEXCUSED))
    else:
        counted = len(roll) - exempt
    rate = _rate(present_first, counted) if held_on is not None else None
    return {
        "cell_id": cell.cell_id,
        "name": cell.name,
        "ward": f"{ward.kind} {ward.short_name}",
        "meeting_day": cell.meeting_day,
        "roll_calls": cell.roll_calls,
        "members": len(roll),
        "probationary": sum(1 for m in roll if m.probationary),
        "exempt": exempt,
        "counted": counted,
        "regular": status,
        "held_on": held_on.isoformat() if held_on else None,
        "rescheduled": regular.rescheduled_at is not None,
        "cancel_reason": regular.cancel_reason,
        "present_first_roll_call": present_first if held_on else None,
        "absent_excused": sum(1 for s in first.values() if s == EXCUSED),
        "absent_unexcused": sum(1 for s in first.values() if s == UNEXCUSED),
        "present_second_roll_call": second_present,
        "present_both_roll_calls": both,
        "rate": rate,
        "below_target": rate is not None and rate < TARGET,
        "supervisor_present": held_on is not None and regular.supervisor_present,
        "thematic_scheduled": len(thematic),
        "thematic_held": sum(1 for m in thematic if m.opened_at is not None),
        "resolutions": sum(len(m.resolutions) for m in own),
        "tasks_assigned": sum(len(r.tasks) for m in own for r in m.resolutions),
        "tasks_completed": sum(
            1 for m in own for r in m.resolutions for t in r.tasks if t.completed_at
        ),
        "petitions_raised": sum(len(m.petitions) for m in meetings),
    }


def _recurring_topics(
    petitions: list[Petition], ward_names: dict[str, str]
) -> tuple[int, list[dict[str, Any]]]:
    """(how many repeat an earlier petition's topic, the topics repeated), ``petitions``
    in the order they were raised."""
    topics: dict[tuple[str, str, str], list[Petition]] = {}
    for p in petitions:
        topics.setdefault((p.ward_id, p.category, _place(p.place)), []).append(p)
    repeated = [raised for raised in topics.values() if len(raised) > 1]
    return sum(len(raised) - 1 for raised in repeated), [
        {
            "ward": ward_names[raised[0].ward_id],
            "category": raised[0].category,
            "place": raised[0].place,
            "times": len(raised),
        }
        for raised in repeated
    ]


def _figures(
    cells: list[dict[str, Any]],
    meetings: list[Meeting],
    ward_names: dict[str, str],
    qualify: bool = False,
) -> dict[str, Any]:
    """Sums over ``cells``; with ``qualify``, cell names carry their ward's (district)."""

    def name(c: dict[str, Any]) -> str:
        return f"{c['name']} ({c['ward']})" if qualify else str(c["name"])

    held = [c for c in cells if c["held_on"] is not None]
    two = [c for c in held if c["roll_calls"] == 2 and c["present_second_roll_call"] is not None]
    not_held = [c for c in cells if c["held_on"] is None]
    counted_held = sum(c["counted"] for c in held)
    present = sum(c["present_first_roll_call"] for c in held)
    petitions = sorted(
        (p for m in meetings for p in m.petitions), key=lambda p: (p.raised_at, p.petition_id)
    )
    recurring, recurring_topics = _recurring_topics(petitions, ward_names)
    reopened = [p for p in petitions if p.reopened_at is not None]
    resolved = [p for p in petitions if p.resolved_at is not None and p.reopened_at is None]
    escalated = [p for p in petitions if p.escalated_at is not None]
    below = [name(c) for c in held if c["below_target"]]
    return {
        "cells": len(cells),
        "members": {
            "total": sum(c["members"] for c in cells),
            "probationary": sum(c["probationary"] for c in cells),
            "exempt": sum(c["exempt"] for c in cells),
            "counted": sum(c["counted"] for c in cells),
        },
        "regular_meetings": {
            "scheduled": len(cells),
            "held_on_planned_day": sum(1 for c in cells if c["regular"] == "held_on_planned_day"),
            "held_late": sum(1 for c in cells if c["regular"] == "held_late"),
            "not_held": len(not_held),
            "not_held_cells": [name(c) for c in not_held],
            "cancelled": sum(1 for c in cells if c["regular"] == "cancelled"),
            "cancelled_reasons": [
                {"cell": name(c), "reason": c["cancel_reason"]}
                for c in cells
                if c["regular"] == "cancelled"
            ],
            "rescheduled": sum(1 for c in cells if c["rescheduled"]),
            "supervisor_present": sum(1 for c in cells if c["supervisor_present"]),
        },
        "thematic_meetings": {
            "scheduled": sum(c["thematic_scheduled"] for c in cells),
            "held": sum(c["thematic_held"] for c in cells),
        },
        "attendance": {
            "members_counted": counted_held,
            "present_first_roll_call": present,
            "absent_excused": sum(c["absent_excused"] for c in held),
            "absent_unexcused": sum(c["absent_unexcused"] for c in held),
            "rate": _rate(present, counted_held),
            "two_roll_call_cells_held": len(two),
            "members_counted_two_roll_calls": sum(c["counted"] for c in two),
            "present_second_roll_call": sum(c["present_second_roll_call"] for c in two),
            "present_both_roll_calls": sum(c["present_both_roll_calls"] for c in two),
            "cells_below_target": len(below),
            "cells_below_target_names": below,
        },
        "resolutions": {
            "adopted": sum(c["resolutions"] for c in cells),
            "tasks_assigned": sum(c["tasks_assigned"] for c in cells),
            "tasks_completed": sum(c["tasks_completed"] for c in cells),
        },
        "petitions": {
            "raised": len(petitions),
            "by_category": {
                cat: sum(1 for p in petitions if p.category == cat) for cat in CATEGORIES
            },
            "recurring": recurring,
            "recurring_topics": recurring_topics,
            "acknowledged": sum(1 for p in petitions if p.acknowledged_at is not None),
            "resolved_at_cell": len(resolved),
            "reopened": len(reopened),
            "escalated_to_ward": len(escalated),
            "open_at_cell": len(petitions) - len(resolved) - len(escalated),
        },
    }


def expected_figures(
    district: District, month: Month, commands: list[PlannedCommand]
) -> dict[str, Any]:
    by_cell: dict[str, list[Meeting]] = {}
    for meeting in month.meetings:
        by_cell.setdefault(meeting.cell_id, []).append(meeting)
    wards = []
    all_cells: list[dict[str, Any]] = []
    ward_names = {w.unit_id: f"{w.kind} {w.short_name}" for w in district.wards}
    for ward in district.wards:
        cells = [_cell_figures(ward, c, month, by_cell[c.cell_id]) for c in ward.cells]
        meetings = [m for c in ward.cells for m in by_cell[c.cell_id]]
        wards.append(
            {
                "ward_id": ward.unit_id,
                "name": ward.name,
                "parent_id": ward.parent_id,
                **_figures(cells, meetings, ward_names),
                "cells_detail": cells,
            }
        )
        all_cells += cells
    by_type = Counter(c.command.command_type for c in commands)
    events = expected_events(commands)
    return {
        "schema": SCHEMA,
        "seed": district.config.seed,
        "month": month.label,
        "timezone": "Asia/Ho_Chi_Minh",
        "id_prefix": district.config.id_prefix,
        "attendance_target": TARGET,
        "units": [
            {"unit_id": u.unit_id, "level": u.level, "name": u.name, "parent_id": u.parent_id}
            for u in district.units
        ],
        "commands": {"total": len(commands), "by_type": dict(sorted(by_type.items()))},
        "events": {"total": sum(events.values()), "by_type": events},
        "district": _figures(all_cells, month.meetings, ward_names, qualify=True),
        "wards": wards,
    }
