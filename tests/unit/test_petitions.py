"""Given events, when a command, then events or a rejection: petitions and their ladder."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.meetings.domain.cell import Cell
from services.meetings.domain.errors import DomainRejection
from services.meetings.domain.petition import Petition, PetitionPolicy, Scope, Unit, place_key
from shared.clock import LOCAL_TZ
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
    CellRegistered,
    EscalationReason,
    PetitionCategory,
    PetitionEscalated,
    PetitionMarkedOverdue,
    PetitionRaised,
    PetitionReopened,
    PetitionResolved,
)

POLICY = PetitionPolicy.parse("cell:7,ward:15,district:30,province:45", 180)
TWO_TIER = PetitionPolicy.parse("cell:10,commune:20,province:30", 90)
T0 = datetime(2026, 12, 3, 21, 0, tzinfo=LOCAL_TZ)
PID, WARD = "kn-1", "nam-ngan"
# The ward's ancestors, nearest first, with their levels.
CHAIN = [Unit("tp-thanh-hoa", "district"), Unit("tinh-thanh-hoa", "province")]
SYSTEM = Scope("system", None)  # the deadline scheduler, an upstream publisher

RAISE = RaisePetition(
    petition_id=PID,
    ward_id=WARD,
    cell_id="nam-ngan.to-03",
    category=PetitionCategory.ROADS,
    place="Ngõ 5, đường Lê Lai",
    raised_by="Bà Nguyễn Thị Lan",
    text="Đường ngõ 5 xuống cấp, mưa là ngập, đề nghị sửa chữa.",
)

# The cell the petition is raised in, registered in the same ward.
RAISED_IN = Cell.replay(
    RAISE.cell_id,
    [CellRegistered(cell_id=RAISE.cell_id, ward_id=WARD, name="Tổ 3", meeting_day=3, roll_calls=1)],
)


def raised(policy: PetitionPolicy = POLICY, similar: list[str] | None = None) -> list[DomainEvent]:
    return Petition.replay(PID, []).raise_(RAISE, policy, T0, similar or [], RAISED_IN)


def overdue(
    history: list[DomainEvent], policy: PetitionPolicy = POLICY, chain: list[Unit] = CHAIN
) -> list[DomainEvent]:
    """The scheduler's command at the current deadline, a second after it passed."""
    deadline = Petition.replay(PID, history).deadline_at
    assert deadline is not None
    cmd = EscalateOverduePetition(petition_id=PID, ward_id=WARD, deadline_at=deadline)
    return history + Petition.replay(PID, history).escalate_overdue(
        cmd, policy, deadline + timedelta(seconds=1), chain, SYSTEM
    )


def test_raising_sets_the_cell_level_and_its_deadline() -> None:
    event = raised()[0]
    assert isinstance(event, PetitionRaised)
    assert (event.level, event.holder_id) == ("cell", "nam-ngan.to-03")
    assert event.deadline_at == T0 + timedelta(days=7)
    assert not event.recurring
    with pytest.raises(DomainRejection) as again:
        Petition.replay(PID, raised()).raise_(RAISE, POLICY, T0, [], RAISED_IN)
    assert again.value.code == "already_exists"


def test_the_same_category_and_place_within_the_window_is_recurring() -> None:
    event = raised(similar=["kn-0"])[0]
    assert isinstance(event, PetitionRaised)
    assert event.recurring and event.similar_petition_ids == ["kn-0"]
    assert place_key("  Ngõ 5,  đường LÊ LAI ") == place_key("Ngõ 5, đường Lê Lai")
    assert place_key("Thôn Hòa") != place_key("Thôn Hóa")  # diacritics tell places apart


def test_a_missed_deadline_climbs_one_level_with_a_new_deadline() -> None:
    history = overdue(raised())
    up = history[-1]
    assert isinstance(up, PetitionEscalated)
    assert (up.from_level, up.to_level, up.to_holder_id) == ("cell", "ward", WARD)
    assert up.reason == EscalationReason.DEADLINE
    assert up.deadline_at == up.escalated_at + timedelta(days=15)
    second = overdue(history)[-1]
    assert isinstance(second, PetitionEscalated)
    assert (second.to_level, second.to_holder_id) == ("district", "tp-thanh-hoa")


def test_at_the_top_a_missed_deadline_only_marks_it_overdue_once() -> None:
    history = raised(TWO_TIER)
    for _ in range(2):
        history = overdue(history, TWO_TIER)
    assert isinstance(history[-1], PetitionEscalated) and history[-1].to_level == "province"
    history = overdue(history, TWO_TIER)
    assert isinstance(history[-1], PetitionMarkedOverdue)
    assert Petition.replay(PID, history).deadline_at is None  # nothing left to schedule


def test_the_scheduler_changes_nothing_once_the_deadline_moved_or_before_it() -> None:
    history = raised()
    deadline = T0 + timedelta(days=7)
    early = EscalateOverduePetition(petition_id=PID, ward_id=WARD, deadline_at=deadline)
    assert (
        Petition.replay(PID, history).escalate_overdue(
            early, POLICY, deadline - timedelta(seconds=1), CHAIN, SYSTEM
        )
        == []
    )
    resolved = history + Petition.replay(PID, history).resolve(
        ResolvePetition(petition_id=PID, ward_id=WARD, response="Đã sửa xong."), T0, SYSTEM, []
    )
    assert (
        Petition.replay(PID, resolved).escalate_overdue(
            early, POLICY, deadline + timedelta(days=1), CHAIN, SYSTEM
        )
        == []
    )
    moved = overdue(history)
    assert (
        Petition.replay(PID, moved).escalate_overdue(
            early, POLICY, deadline + timedelta(days=1), CHAIN, SYSTEM
        )
        == []
    )


def test_by_hand_beyond_authority_and_never_past_the_top() -> None:
    cmd = EscalatePetition(petition_id=PID, ward_id=WARD, note="Vượt thẩm quyền của chi bộ")
    up = Petition.replay(PID, raised()).escalate(cmd, POLICY, T0, CHAIN, SYSTEM)[0]
    assert isinstance(up, PetitionEscalated) and up.reason == EscalationReason.BEYOND_AUTHORITY
    top = raised(TWO_TIER)
    for _ in range(2):
        top = overdue(top, TWO_TIER)
    with pytest.raises(DomainRejection) as refused:
        Petition.replay(PID, top).escalate(cmd, TWO_TIER, T0, CHAIN, SYSTEM)
    assert refused.value.code == "top_of_ladder"


def test_acknowledge_resolve_reopen() -> None:
    history = raised()
    ack = AcknowledgePetition(petition_id=PID, ward_id=WARD)
    history += Petition.replay(PID, history).acknowledge(ack, T0, SYSTEM, [])
    with pytest.raises(DomainRejection) as twice:
        Petition.replay(PID, history).acknowledge(ack, T0, SYSTEM, [])
    assert twice.value.code == "already_acknowledged"
    reopen = ReopenPetition(petition_id=PID, ward_id=WARD, reason="Người dân chưa đồng tình")
    with pytest.raises(DomainRejection) as not_yet:
        Petition.replay(PID, history).reopen(reopen, POLICY, T0, SYSTEM, [])
    assert not_yet.value.code == "not_resolved"
    resolve = ResolvePetition(petition_id=PID, ward_id=WARD, response="Đã trả lời cử tri.")
    history += Petition.replay(PID, history).resolve(resolve, T0, SYSTEM, [])
    assert isinstance(history[-1], PetitionResolved) and history[-1].level == "cell"
    with pytest.raises(DomainRejection) as done:
        Petition.replay(PID, history).resolve(resolve, T0, SYSTEM, [])
    assert done.value.code == "already_resolved"
    later = T0 + timedelta(days=2)
    history += Petition.replay(PID, history).reopen(reopen, POLICY, later, SYSTEM, [])
    assert isinstance(history[-1], PetitionReopened)
    assert Petition.replay(PID, history).deadline_at == later + timedelta(days=7)


def test_commands_for_another_ward_or_an_unknown_petition_are_refused() -> None:
    resolve = ResolvePetition(petition_id=PID, ward_id="other-ward", response="x")
    with pytest.raises(DomainRejection) as wrong:
        Petition.replay(PID, raised()).resolve(resolve, T0, SYSTEM, [])
    assert wrong.value.code == "wrong_ward"
    with pytest.raises(DomainRejection) as unknown:
        Petition.replay(PID, []).resolve(resolve, T0, SYSTEM, [])
    assert unknown.value.code == "unknown_petition"


@given(
    steps=st.lists(st.sampled_from(["tick", "resolve", "reopen", "repeat"]), max_size=12),
    ladder=st.sampled_from([POLICY, TWO_TIER]),
)
def test_escalation_invariants(steps: list[str], ladder: PetitionPolicy) -> None:
    """Whatever the order of deadlines, repeats of the scheduler, resolutions and reopenings:
    each deadline escalates at most once, levels only climb one at a time, and a resolved
    petition is never escalated."""
    history = raised(ladder)
    now = T0
    last_command: EscalateOverduePetition | None = None
    for step in steps:
        petition = Petition.replay(PID, history)
        if step == "tick" and petition.deadline_at is not None:
            now = petition.deadline_at + timedelta(seconds=1)
            last_command = EscalateOverduePetition(
                petition_id=PID, ward_id=WARD, deadline_at=petition.deadline_at
            )
            history += petition.escalate_overdue(last_command, ladder, now, CHAIN, SYSTEM)
        elif step == "repeat" and last_command is not None:
            assert petition.escalate_overdue(last_command, ladder, now, CHAIN, SYSTEM) == []
        elif step == "resolve" and not petition.resolved:
            history += petition.resolve(
                ResolvePetition(petition_id=PID, ward_id=WARD, response="Xong."), now, SYSTEM, []
            )
        elif step == "reopen" and petition.resolved:
            history += petition.reopen(
                ReopenPetition(petition_id=PID, ward_id=WARD, reason="Chưa đạt"),
                ladder,
                now,
                SYSTEM,
                [],
            )
    missed = [
        e.missed_deadline_at
        for e in history
        if isinstance(e, PetitionEscalated | PetitionMarkedOverdue)
    ]
    assert len(missed) == len(set(missed))  # one escalation per deadline
    levels = [ladder.index(e.to_level) for e in history if isinstance(e, PetitionEscalated)]
    assert levels == list(range(1, len(levels) + 1))  # one level at a time, upwards
    resolved = False
    for event in history:
        if isinstance(event, PetitionResolved):
            resolved = True
        elif isinstance(event, PetitionReopened):
            resolved = False
        elif isinstance(event, PetitionEscalated | PetitionMarkedOverdue):
            assert not resolved


def test_a_petition_is_raised_only_in_a_registered_cell_of_the_commands_ward() -> None:
    unregistered = Cell(RAISE.cell_id)
    foreign = Cell.replay(
        RAISE.cell_id,
        [
            CellRegistered(
                cell_id=RAISE.cell_id, ward_id="other", name="x", meeting_day=3, roll_calls=1
            )
        ],
    )
    for cell, code in ((unregistered, "unknown_cell"), (foreign, "wrong_ward")):
        with pytest.raises(DomainRejection) as refused:
            Petition.replay(PID, []).raise_(RAISE, POLICY, T0, [], cell)
        assert refused.value.code == code and refused.value.message_vi


def test_a_petition_held_at_a_level_no_longer_on_the_ladder_is_refused_not_crashed() -> None:
    """The district level removed from PETITION_LADDER (the 2025 two-tier reform) under a
    petition it holds: each of its commands is refused with the reason, per petition."""
    at_district = overdue(overdue(raised()))
    assert Petition.replay(PID, at_district).level == "district"
    two_tier = PetitionPolicy.parse("cell:7,ward:15,province:45", 180)
    deadline = Petition.replay(PID, at_district).deadline_at
    assert deadline is not None
    cmd = EscalateOverduePetition(petition_id=PID, ward_id=WARD, deadline_at=deadline)
    petition = Petition.replay(PID, at_district)
    for decide in (
        lambda: petition.escalate_overdue(
            cmd, two_tier, deadline + timedelta(days=1), CHAIN, SYSTEM
        ),
        lambda: petition.escalate(
            EscalatePetition(petition_id=PID, ward_id=WARD, note="x"), two_tier, T0, CHAIN, SYSTEM
        ),
    ):
        with pytest.raises(DomainRejection) as refused:
            decide()
        assert refused.value.code == "unknown_level"
        assert refused.value.details["level"] == "district"
        assert "không còn trong thang" in refused.value.message_vi


# --- who holds it after the ward: by the units' levels, not their place in the chain --------

TWO_TIER_TREE = [Unit("tinh-thanh-hoa", "province")]  # no district since 1 July 2025


def holders(history: list[DomainEvent]) -> list[tuple[str, str | None]]:
    return [(e.to_level, e.to_holder_id) for e in history if isinstance(e, PetitionEscalated)]


def test_a_rung_is_held_by_the_ancestor_of_its_level_and_a_rung_no_unit_has_is_passed_over() -> (
    None
):
    """The default ladder (with a district) on a two-tier tree: the ward's petition goes
    to the province, under the province's deadline, and at the province it is the top."""
    at_ward = overdue(raised(), chain=TWO_TIER_TREE)
    at_province = overdue(at_ward, chain=TWO_TIER_TREE)
    assert holders(at_province) == [("ward", WARD), ("province", "tinh-thanh-hoa")]
    up = at_province[-1]
    assert isinstance(up, PetitionEscalated) and up.from_level == "ward"
    assert up.deadline_at == up.escalated_at + timedelta(days=45)
    top = overdue(at_province, chain=TWO_TIER_TREE)
    assert isinstance(top[-1], PetitionMarkedOverdue) and top[-1].level == "province"
    by_hand = EscalatePetition(petition_id=PID, ward_id=WARD, note="Vượt thẩm quyền")
    with pytest.raises(DomainRejection) as refused:
        Petition.replay(PID, at_province).escalate(by_hand, POLICY, T0, TWO_TIER_TREE, SYSTEM)
    assert refused.value.code == "top_of_ladder"


def test_a_two_tier_ladder_on_a_district_tree_and_the_chain_order_do_not_matter() -> None:
    two_tier = PetitionPolicy.parse("cell:7,ward:15,province:45", 180)
    history = overdue(overdue(raised(two_tier), two_tier), two_tier)
    assert holders(history) == [("ward", WARD), ("province", "tinh-thanh-hoa")]
    # A commune's own level is not the ladder's name for the ward tier: it still holds it.
    communes = PetitionPolicy.parse("cell:10,commune:20,province:30", 90)
    history = overdue(overdue(raised(communes), communes), communes)
    assert holders(history) == [("commune", WARD), ("province", "tinh-thanh-hoa")]


def test_a_parent_not_registered_yet_holds_nothing_and_with_no_unit_above_the_ward_is_the_top() -> (
    None
):
    unregistered = [Unit("tp-thanh-hoa", None)]  # named by the ward, not registered yet
    at_ward = overdue(raised(), chain=unregistered)
    assert holders(at_ward) == [("ward", WARD)]
    top = overdue(at_ward, chain=unregistered)
    assert isinstance(top[-1], PetitionMarkedOverdue) and top[-1].level == "ward"
    assert Petition.replay(PID, top).deadline_at is None
    by_hand = EscalatePetition(petition_id=PID, ward_id=WARD, note="Vượt thẩm quyền")
    with pytest.raises(DomainRejection) as refused:
        Petition.replay(PID, at_ward).escalate(by_hand, POLICY, T0, [], SYSTEM)
    assert refused.value.code == "top_of_ladder" and refused.value.message_vi


# --- who may act on it: the unit holding it, or one above that unit ------------------------

CELL_SECRETARY = Scope("cell", RAISE.cell_id)
OTHER_CELL = Scope("cell", "nam-ngan.to-04")
WARD_OFFICIAL = Scope("ward", WARD)
DISTRICT_OFFICIAL = Scope("district", "tp-thanh-hoa")
PROVINCE_OFFICIAL = Scope("province", "tinh-thanh-hoa")


def acts(history: list[DomainEvent], by: Scope) -> dict[str, str]:
    """Each petition command by ``by`` on the petition as it stands: ``ok`` or the code."""
    petition = Petition.replay(PID, history)
    tries = {
        "acknowledge": lambda: petition.acknowledge(
            AcknowledgePetition(petition_id=PID, ward_id=WARD), T0, by, CHAIN
        ),
        "resolve": lambda: petition.resolve(
            ResolvePetition(petition_id=PID, ward_id=WARD, response="Đã trả lời."), T0, by, CHAIN
        ),
        "escalate": lambda: petition.escalate(
            EscalatePetition(petition_id=PID, ward_id=WARD, note="Vượt thẩm quyền"),
            POLICY,
            T0,
            CHAIN,
            by,
        ),
    }
    outcome = {}
    for name, attempt in tries.items():
        try:
            attempt()
            outcome[name] = "ok"
        except DomainRejection as exc:
            outcome[name] = exc.code
            if exc.code == "forbidden_scope":
                assert exc.status == 403
                assert "không có quyền xử lý kiến nghị" in exc.message_vi
    return outcome


ALL_OK = {"acknowledge": "ok", "resolve": "ok", "escalate": "ok"}
FORBIDDEN = dict.fromkeys(ALL_OK, "forbidden_scope")


def test_the_cell_secretary_acts_on_what_the_cell_holds_and_nothing_after_it_went_up() -> None:
    at_cell = raised()
    assert acts(at_cell, CELL_SECRETARY) == ALL_OK  # "a cell resolves what it can"
    assert acts(at_cell, OTHER_CELL) == FORBIDDEN
    at_ward = overdue(at_cell)
    assert acts(at_ward, CELL_SECRETARY) == FORBIDDEN
    resolved = at_cell + Petition.replay(PID, at_cell).resolve(
        ResolvePetition(petition_id=PID, ward_id=WARD, response="Đã sửa."), T0, CELL_SECRETARY, []
    )
    reopen = ReopenPetition(petition_id=PID, ward_id=WARD, reason="Cử tri chưa đồng tình")
    again = Petition.replay(PID, resolved).reopen(reopen, POLICY, T0, CELL_SECRETARY, [])
    assert isinstance(again[0], PetitionReopened)


def test_each_level_acts_on_what_it_or_a_unit_below_holds_never_above() -> None:
    at_cell = raised()
    at_ward = overdue(at_cell)
    at_district = overdue(at_ward)
    at_province = overdue(at_district)
    assert [acts(h, WARD_OFFICIAL) for h in (at_cell, at_ward)] == [ALL_OK, ALL_OK]
    assert [acts(h, WARD_OFFICIAL) for h in (at_district, at_province)] == [FORBIDDEN] * 2
    assert [acts(h, DISTRICT_OFFICIAL) for h in (at_cell, at_ward, at_district)] == [ALL_OK] * 3
    assert acts(at_province, DISTRICT_OFFICIAL) == FORBIDDEN
    at_top = {"acknowledge": "ok", "resolve": "ok", "escalate": "top_of_ladder"}
    assert acts(at_province, PROVINCE_OFFICIAL) == at_top
    assert acts(at_province, SYSTEM) == at_top
    assert acts(at_district, Scope("district", "another-district")) == FORBIDDEN
    # The decision refuses before it looks at the petition's state: no hint of it leaks.
    resolved = at_district + Petition.replay(PID, at_district).resolve(
        ResolvePetition(petition_id=PID, ward_id=WARD, response="Xong."), T0, SYSTEM, []
    )
    assert acts(resolved, WARD_OFFICIAL) == FORBIDDEN
    reopen = ReopenPetition(petition_id=PID, ward_id=WARD, reason="Chưa đạt")
    with pytest.raises(DomainRejection) as refused:
        Petition.replay(PID, resolved).reopen(reopen, POLICY, T0, WARD_OFFICIAL, [])
    assert refused.value.code == "forbidden_scope"


def test_the_scheduler_command_from_a_token_is_held_to_the_same_rule() -> None:
    at_district = overdue(overdue(raised()))
    deadline = Petition.replay(PID, at_district).deadline_at
    assert deadline is not None
    cmd = EscalateOverduePetition(petition_id=PID, ward_id=WARD, deadline_at=deadline)
    late = deadline + timedelta(seconds=1)
    with pytest.raises(DomainRejection) as refused:
        Petition.replay(PID, at_district).escalate_overdue(cmd, POLICY, late, [], WARD_OFFICIAL)
    assert refused.value.code == "forbidden_scope"
