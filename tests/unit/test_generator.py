"""The demo generator: deterministic, valid against the contract and the domain's rules,
with figures that add up, at the scale of Thanh Hóa city."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest

from generator.__main__ import main
from generator.build import Generated, generate
from generator.commands import EVENT_OF
from generator.model import GeneratorConfig
from generator.month import LOCAL_TZ, at, previous_month
from services.meetings.domain.errors import DomainRejection
from services.meetings.domain.petition import PetitionPolicy, Scope, Unit, place_key
from services.meetings.service_layer.handlers import ROUTES, Inputs
from shared.contract import DomainEvent
from shared.contract.commands import COMMAND_TYPES, RaisePetition, RegisterUnit
from shared.contract.events import MeetingOpened, PetitionRaised
from shared.contract.inbound import InboundCommand

SMALL = GeneratorConfig(seed=7, wards=3, cells=12)
MONTH = (2026, 10)


@cache
def small(seed: int = 7) -> Generated:
    return generate(GeneratorConfig(seed=seed, wards=3, cells=12), *MONTH)


@cache
def full() -> Generated:
    return generate(GeneratorConfig(seed=2026), *MONTH)


def _dump(g: Generated) -> list[str]:
    return [json.dumps(c.envelope_json(), sort_keys=True) for c in g.commands]


def test_the_same_seed_gives_the_same_commands_and_figures() -> None:
    again = generate(GeneratorConfig(seed=7, wards=3, cells=12), *MONTH)
    assert _dump(again) == _dump(small())
    assert again.expected == small().expected


def test_another_seed_gives_another_month() -> None:
    other = small(8)
    assert _dump(other) != _dump(small())
    assert other.expected["district"] != small().expected["district"]


def test_every_command_validates_against_its_contract_model() -> None:
    for c in small().commands:
        envelope = InboundCommand.model_validate_json(json.dumps(c.envelope_json()))
        assert envelope.source == "chibo-demo"
        command = COMMAND_TYPES[envelope.type].model_validate(envelope.payload)
        assert command == c.command
        assert c.key == command.scope()[0]
    ids = [c.message_id for c in small().commands]
    assert len(set(ids)) == len(ids)


PUBLISHER = Scope("system", None)  # the generator publishes over Kafka, as a system source


def _replay(g: Generated, now: datetime) -> list[tuple[str, DomainEvent]]:
    """Every command through the meetings service's own decisions, in memory and in order:
    none may be refused."""
    streams: dict[str, list[DomainEvent]] = {}
    policy = PetitionPolicy.parse("cell:7,ward:15,district:30,province:45", 180)
    similar: dict[tuple[str, str, str], list[str]] = {}
    chains: dict[str, list[Unit]] = {}
    parents = {u.unit_id: u.parent_id for u in g.district.units}
    parents |= {w.unit_id: w.parent_id for w in g.district.wards}
    levels = {u.unit_id: u.level for u in g.district.units}
    for ward in parents:
        chain, up = [], parents[ward]
        while up:
            chain.append(Unit(up, levels.get(up)))
            up = parents[up]
        chains[ward] = chain
    out = []
    for c in g.commands:
        route = ROUTES[type(c.command)]
        stream_id, ward_id = route.target(c.command)
        for sid in [stream_id, *route.reads(c.command)]:
            streams.setdefault(sid, [])
        inputs = Inputs(now=now, streams=streams, policy=policy, chains=chains, similar=similar)
        try:
            events = route.decide(c.command, streams[stream_id], inputs, PUBLISHER)
        except DomainRejection as exc:
            msg = f"{c.message_id} {c.command.command_type}: {exc.code} {exc}"
            raise AssertionError(msg) from exc
        assert len(events) == 1, c.command
        streams[stream_id].extend(events)
        if isinstance(c.command, RaisePetition):
            key = (c.command.ward_id, c.command.category.value, place_key(c.command.place))
            similar.setdefault(key, []).append(c.command.petition_id)
        out += [(ward_id, e) for e in events]
    return out


@pytest.mark.parametrize("which", ["small", "full"])
def test_every_command_passes_the_domain_rules(which: str) -> None:
    g = small() if which == "small" else full()
    # The service's clock when publishing: after the month (it refuses meetings in the future).
    now = at(g.month.last_day, 23, 59).astimezone(UTC) + timedelta(days=1)
    events = _replay(g, now)
    by_type = Counter(type(e).__name__ for _, e in events)
    assert dict(by_type) == g.expected["events"]["by_type"]
    raised = [e for _, e in events if isinstance(e, PetitionRaised)]
    assert sum(e.recurring for e in raised) == g.expected["district"]["petitions"]["recurring"]
    # The service's own attendance, from the opened meetings, agrees with the figures.
    present = sum(
        sum(1 for a in e.roll_call if a.status == "present")
        for _, e in events
        if isinstance(e, MeetingOpened) and e.meeting_id.endswith(".tk")
    )
    assert present == g.expected["district"]["attendance"]["present_first_roll_call"]


def test_the_domain_refuses_the_month_before_it_happens() -> None:
    g = small()
    with pytest.raises(AssertionError, match="implausible_time"):
        _replay(g, at(g.month.first_day, 12).astimezone(UTC))


def _check(f: dict[str, Any], cells: list[dict[str, Any]]) -> None:
    r = f["regular_meetings"]
    assert r["held_on_planned_day"] + r["held_late"] + r["not_held"] == f["cells"]
    assert r["scheduled"] == f["cells"]
    assert len(r["not_held_cells"]) == r["not_held"] >= r["cancelled"]
    assert len(r["cancelled_reasons"]) == r["cancelled"]
    assert all(x["reason"] for x in r["cancelled_reasons"])
    m = f["members"]
    # Who had to attend: a held meeting's roll call (the roll that day, exempt apart),
    # otherwise the month-end roll less the exempt; the totals are the cells' sums.
    for c in cells:
        if c["held_on"] is not None:
            called = c["present_first_roll_call"] + c["absent_excused"] + c["absent_unexcused"]
            assert c["counted"] == called, c["cell_id"]
        else:
            assert c["counted"] == c["members"] - c["exempt"], c["cell_id"]
    for key in ("total", "exempt", "counted"):
        assert m[key] == sum(c["members" if key == "total" else key] for c in cells), key
    a = f["attendance"]
    assert (
        a["present_first_roll_call"] + a["absent_excused"] + a["absent_unexcused"]
        == (a["members_counted"])
    )
    assert a["present_both_roll_calls"] <= a["present_second_roll_call"]
    assert a["members_counted"] <= m["counted"]
    assert len(a["cells_below_target_names"]) == a["cells_below_target"]
    p = f["petitions"]
    assert sum(p["by_category"].values()) == p["raised"]
    assert p["resolved_at_cell"] + p["escalated_to_ward"] + p["open_at_cell"] == p["raised"]
    assert p["recurring"] == sum(t["times"] - 1 for t in p["recurring_topics"])
    res = f["resolutions"]
    assert res["tasks_completed"] <= res["tasks_assigned"]


def test_the_figures_add_up_per_ward_and_for_the_district() -> None:
    for g in (small(), full()):
        district = g.expected["district"]
        _check(district, [c for w in g.expected["wards"] for c in w["cells_detail"]])
        for ward in g.expected["wards"]:
            _check(ward, ward["cells_detail"])
        for path in (("cells",), ("members", "exempt"), ("petitions", "raised")):
            total = 0
            for ward in g.expected["wards"]:
                value: Any = ward
                for part in path:
                    value = value[part]
                total += value
            value = district
            for part in path:
                value = value[part]
            assert total == value, path


def test_a_full_district_at_the_scale_of_thanh_hoa_city() -> None:
    g = full()
    d = g.expected["district"]
    assert len(g.expected["wards"]) == 34
    assert d["cells"] == 311
    assert 7_000 <= d["members"]["total"] <= 9_000
    assert all(10 <= len(c.members) <= 41 for c in g.district.cells)  # 40, +1 moved in
    assert 10_000 <= g.expected["commands"]["total"] <= 40_000
    r = d["regular_meetings"]
    assert r["held_on_planned_day"] > r["held_late"] > 0 and r["not_held"] > r["cancelled"] > 0
    assert 0.25 <= d["thematic_meetings"]["held"] / d["cells"] <= 0.45
    assert d["attendance"]["rate"] >= 0.9 and d["attendance"]["cells_below_target"] > 0
    two = sum(1 for c in g.district.cells if c.roll_calls == 2)
    assert 0.25 <= two / 311 <= 0.42
    days = Counter(c.meeting_day for c in g.district.cells)
    assert days[3] > 200 and days[10] > 0
    p = d["petitions"]
    assert all(n > 0 for n in p["by_category"].values())
    assert p["recurring"] > 0 and p["resolved_at_cell"] > 0 and p["escalated_to_ward"] > 0
    assert d["members"]["exempt"] > 0 and d["members"]["probationary"] > 0
    types = {c.command.command_type for c in g.commands}
    assert types == set(EVENT_OF)
    # Communes (xã) are registered as such, beside the wards (phường): the reports must
    # treat both as wards (REPORT_WARD_LEVELS), petitions included.
    wards = {w.unit_id for w in g.district.wards}
    levels = Counter(
        c.command.level
        for c in g.commands
        if isinstance(c.command, RegisterUnit) and c.command.unit_id in wards
    )
    assert levels["commune"] == 14 and levels["ward"] == 20


def test_text_is_vietnamese_in_nfc() -> None:
    g = small()
    for ward in g.expected["wards"]:
        assert ward["name"].startswith("Đảng bộ ")
    for c in g.commands:
        text = json.dumps(c.command.model_dump(mode="json"), ensure_ascii=False)
        assert unicodedata.is_normalized("NFC", text)


def test_the_default_month_is_the_previous_one_in_local_time() -> None:
    # 1 November, 00:30 in Hà Nội is still 31 October in UTC.
    assert previous_month(datetime(2026, 10, 31, 17, 30, tzinfo=UTC)) == (2026, 10)
    assert previous_month(datetime(2026, 1, 15, tzinfo=LOCAL_TZ)) == (2025, 12)


def test_the_command_line_writes_commands_and_figures(tmp_path: Any) -> None:
    out = tmp_path / "out"
    argv = ["--seed", "7", "--month", "2026-10", "--wards", "2", "--cells", "6", "--out"]
    assert main([*argv, str(out)]) == 0
    lines = (out / "commands.jsonl").read_text(encoding="utf-8").splitlines()
    expected = json.loads((out / "expected.json").read_text(encoding="utf-8"))
    assert len(lines) == expected["commands"]["total"]
    assert expected["month"] == "2026-10" and expected["district"]["cells"] == 6
    assert main(["--seed", "7", "--month", "2099-01", "--out", str(out), "--publish",
                 "--bootstrap", "x:1", "--database-url", "postgresql://x"]) == 2  # fmt: skip


@pytest.mark.parametrize("which", ["small", "full"])
def test_members_move_and_join_after_their_cells_met(which: str) -> None:
    """So the month-end roll differs from the meetings' rolls, and a report that took the
    attendance denominator from the month-end roll would disagree with the figures."""
    g = small() if which == "small" else full()
    changes = g.month.roll_changes
    assert any(c.from_cell for c in changes) and any(c.from_cell is None for c in changes)
    cells = {c["cell_id"]: c for w in g.expected["wards"] for c in w["cells_detail"]}
    touched = set()
    for change in changes:
        for cell_id in [change.to_cell, *([change.from_cell] if change.from_cell else [])]:
            met = [m for m in g.month.meetings if m.cell_id == cell_id and m.closed_at]
            assert met and all(m.closed_at < change.at for m in met)  # type: ignore[operator]
            assert cells[cell_id]["held_on"] is not None
            touched.add(cell_id)
        if change.from_cell:  # present at the meeting, gone by the month's end
            regular = next(
                m for m in g.month.meetings if m.cell_id == change.from_cell and m.kind == "regular"
            )
            assert any(
                e.member_id == change.member.member_id and e.status == "present"
                for e in regular.roll_call
            )
    # Cells where the month-end rule (members − exempt) would give another denominator.
    assert any(cells[c]["counted"] != cells[c]["members"] - cells[c]["exempt"] for c in touched)
