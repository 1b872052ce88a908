"""The command bus keeps replayed cells across batches (``CellMemo``): a cell is reused only
while its history is the same list of events, and replayed again as soon as it is not."""

from __future__ import annotations

from services.meetings.service_layer.handlers import CellMemo
from shared.contract import DomainEvent
from shared.contract.events import CellRegistered, MemberAdmitted, MemberStatus

CELL, WARD = "w1.to-01", "w1"


def admitted(n: int) -> MemberAdmitted:
    return MemberAdmitted(
        member_id=f"m{n}",
        full_name=f"Nguyễn Văn {n}",
        status=MemberStatus.FULL,
        cell_id=CELL,
        ward_id=WARD,
    )


def history(members: int) -> list[DomainEvent]:
    registered = CellRegistered(
        cell_id=CELL, ward_id=WARD, name="Chi bộ Tổ dân phố 1", meeting_day=3, roll_calls=1
    )
    return [registered, *(admitted(n) for n in range(members))]


def test_the_same_history_gives_the_same_cell() -> None:
    memo, events = CellMemo(), history(3)
    first = memo.replay("w1.to-01", events)
    assert memo.replay("w1.to-01", list(events)) is first  # a copy of the same events
    assert set(first.members) == {"m0", "m1", "m2"}


def test_a_longer_or_another_history_is_replayed_again() -> None:
    memo, events = CellMemo(), history(3)
    first = memo.replay("w1.to-01", events)
    longer = memo.replay("w1.to-01", [*events, admitted(3)])
    assert longer is not first and set(longer.members) == {"m0", "m1", "m2", "m3"}
    # A history of the same length ending in another event (a rolled-back batch's
    # decision, then what was committed instead) is not taken for it.
    other = memo.replay("w1.to-01", [*events, admitted(4)])
    assert other is not longer and "m4" in other.members and "m3" not in other.members


def test_an_unregistered_cell_is_not_kept() -> None:
    memo = CellMemo()
    assert memo.replay("w1.to-02", []).registered is None
    assert memo.replay("w1.to-02", []).registered is None
