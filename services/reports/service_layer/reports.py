"""Reads a unit's monthly report: a ward's own, or the roll-up of the wards below a unit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.reports.adapters import projection_store
from services.reports.domain import facts
from services.reports.domain.monthly_report import ReportPolicy, rollup_report, ward_report
from services.reports.domain.report import RollupReport, WardReport
from shared.auth import AuthError, Principal, forbidden_scope
from shared.clock import Clock, ReportMonth


class UnknownUnit(LookupError):
    pass


class NotYetApplied(TimeoutError):
    """A read-your-writes wait ran out: these streams are not applied up to the version."""

    def __init__(self, behind: dict[str, int]) -> None:
        super().__init__(f"not applied yet: {behind}")
        self.behind = behind


@dataclass(frozen=True)
class Tree:
    units: dict[str, facts.Unit]
    ward_levels: frozenset[str]

    def chain(self, unit_id: str) -> list[facts.Unit]:
        """The units above ``unit_id``, nearest first."""
        chain, seen = [], {unit_id}
        parent = self.units[unit_id].parent_id
        while parent and parent in self.units and parent not in seen:
            seen.add(parent)
            chain.append(self.units[parent])
            parent = self.units[parent].parent_id
        return chain

    def between(self, unit_id: str, top_id: str) -> list[facts.Unit]:
        """The units strictly between ``unit_id`` and the unit ``top_id`` above it."""
        chain = self.chain(unit_id)
        ids = [u.unit_id for u in chain]
        return chain[: ids.index(top_id)] if top_id in ids else []

    def is_ward(self, unit: facts.Unit) -> bool:
        return unit.level in self.ward_levels

    def wards_below(self, unit_id: str) -> list[facts.Unit]:
        return sorted(
            (
                u
                for u in self.units.values()
                if self.is_ward(u) and unit_id in {a.unit_id for a in self.chain(u.unit_id)}
            ),
            key=lambda u: u.name,
        )

    def authorise(self, principal: Principal, unit_id: str) -> None:
        """A ward token reads its ward; a higher one reads the units below it.

        A unit not in the tree is in a token's scope only when the token names that very
        unit (a ward not placed yet) or is ``system``; any other token is refused (403)
        exactly as for an existing unit outside its scope, so that a refusal never tells
        whether a unit exists."""
        if principal.scope_level == "system":
            return
        if principal.scope_level == "cell" or principal.scope_unit is None:
            raise forbidden_scope()
        if principal.scope_unit == unit_id:
            return
        if unit_id not in self.units or principal.scope_unit not in {
            u.unit_id for u in self.chain(unit_id)
        }:
            raise forbidden_scope()

    def readable_unit(self, principal: Principal, unit_id: str) -> facts.Unit:
        """The unit, once ``authorise`` lets the token read it; ``UnknownUnit`` (404) only
        for a unit inside the token's scope."""
        self.authorise(principal, unit_id)
        unit = self.units.get(unit_id)
        if unit is None:
            raise UnknownUnit(unit_id)
        return unit


class ReportReader:
    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: Clock,
        policy: ReportPolicy,
        ward_levels: frozenset[str],
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._policy = policy
        self._ward_levels = ward_levels

    async def tree(self) -> Tree:
        return Tree(await projection_store.units(self._pool), self._ward_levels)

    async def report(
        self,
        principal: Principal,
        unit_id: str,
        month: ReportMonth,
        consistent_with: dict[str, int] | None = None,
        wait_s: float = 0.0,
    ) -> WardReport | RollupReport:
        """The unit's report for the month. With ``consistent_with`` (stream → version),
        it first waits until those versions are applied (``NotYetApplied`` after
        ``wait_s``), but only once the token may read the unit: whether and when the wait
        ends tells how far the streams have got."""
        if consistent_with:
            (await self.tree()).readable_unit(principal, unit_id)
            await self.wait_until_applied(consistent_with, wait_s)
        now = self._clock.now()
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            tree = Tree(await projection_store.units(conn), self._ward_levels)
            unit = tree.readable_unit(principal, unit_id)
            if tree.is_ward(unit):
                wards = [unit]
            else:
                wards = tree.wards_below(unit_id)
            ward_facts = await projection_store.ward_facts(
                conn, wards, month.start, month.end, month.quarter_start()
            )
        if tree.is_ward(unit):
            return ward_report(ward_facts[0], tree.chain(unit_id), month, now, self._policy)
        chains = {w.unit_id: tree.between(w.unit_id, unit_id) for w in wards}
        return rollup_report(
            unit, tree.chain(unit_id), ward_facts, chains, month, now, self._policy
        )

    async def ward_meetings(self, principal: Principal, ward_id: str) -> list[dict[str, Any]]:
        """The meetings scheduled in a ward, for a token whose scope covers it."""
        (await self.tree()).authorise(principal, ward_id)
        return await projection_store.ward_meetings(self._pool, ward_id)

    async def wards(self, principal: Principal) -> list[dict[str, Any]]:
        """The wards with meetings, limited to those the token's scope covers."""
        tree = await self.tree()
        visible = []
        for ward in await projection_store.wards(self._pool):
            try:
                tree.authorise(principal, ward["ward_id"])
            except AuthError:
                continue
            visible.append(ward)
        return visible

    async def wait_until_applied(self, wanted: dict[str, int], timeout_s: float) -> None:
        """Read-your-writes: return once every stream is applied up to its version."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = 0.005
        while True:
            applied = await projection_store.applied_versions(self._pool, list(wanted))
            behind = {s: v for s, v in wanted.items() if applied.get(s, 0) < v}
            if not behind:
                return
            if loop.time() >= deadline:
                raise NotYetApplied(behind)
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.1)
