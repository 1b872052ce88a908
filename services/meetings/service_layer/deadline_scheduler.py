"""The deadline scheduler: escalates petitions whose deadline has passed (design
invariant 1: escalation is a command on the petition, decided by its aggregate).

Durable: the deadlines live in ``meetings.petition_deadlines``, updated in the same
transaction as the petition's events, so nothing is missed while the service is down.
Each scan claims what is due (``due_at`` index: the cost follows what is due, not what
is open) with a short lease, ``for update skip locked``, so replicas take disjoint
rows. Exactly one escalation per deadline comes from the aggregate itself: the command
carries the deadline it acts on and does nothing if the petition has moved on, and two
deciders racing on one petition meet optimistic concurrency. A lease outlives a crash
by at most ``lease_s``.
"""

from __future__ import annotations

import asyncio

import asyncpg

from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.domain.petition import PetitionPolicy
from services.meetings.service_layer.handlers import CommandBus, CommandContext
from shared.auth import Principal, Role
from shared.clock import Clock
from shared.contract.commands import Command, EscalateOverduePetition
from shared.logs import get_logger
from shared.tasks import cancel

log = get_logger(__name__)

SCHEDULER = Principal(
    subject="deadline-scheduler", role=Role.SYSTEM_PUBLISHER, scope_level="system"
)

_CLAIM = """
update meetings.petition_deadlines d
set claimed_until = $1 + make_interval(secs => $3)
where d.petition_id in (
    select petition_id from meetings.petition_deadlines
    where due_at <= $1 and (claimed_until is null or claimed_until < $1)
    order by due_at
    limit $2
    for update skip locked)
returning d.petition_id, d.ward_id, d.due_at
"""


class DeadlineScheduler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: CommandBus,
        clock: Clock,
        metrics: MeetingsMetrics,
        policy: PetitionPolicy,
        *,
        interval_s: float = 0.25,
        batch: int = 500,
        lease_s: float = 30.0,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._clock = clock
        self._metrics = metrics
        self._policy = policy
        self._interval_s = interval_s
        self._batch = batch
        self._lease_s = lease_s
        self._tasks: list[asyncio.Task[None]] = []
        self._levels_seen: set[str] = set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="deadline-scheduler"),
            asyncio.create_task(self._measure(), name="deadline-gauges"),
        ]

    async def stop(self) -> None:
        await cancel(*self._tasks)

    async def run_once(self) -> int:
        """Escalate one batch of due deadlines; returns how many were claimed."""
        now = self._clock.now()
        rows = await self._pool.fetch(_CLAIM, now, self._batch, self._lease_s)
        self._metrics.scheduler_runs.inc()
        if not rows:
            return 0
        items: list[tuple[Command, CommandContext]] = [
            (
                EscalateOverduePetition(
                    petition_id=r["petition_id"], ward_id=r["ward_id"], deadline_at=r["due_at"]
                ),
                CommandContext(principal=SCHEDULER, source="deadline-scheduler", door="scheduler"),
            )
            for r in rows
        ]
        await self._bus.handle_batch(items)
        return len(rows)

    async def _run(self) -> None:
        while True:
            try:
                while await self.run_once() >= self._batch:
                    pass  # a backlog: keep going without pausing
            except Exception:
                log.exception("scheduler.round_failed")
            await asyncio.sleep(self._interval_s)  # the scan interval, not a wait for an event

    async def _measure(self) -> None:
        while True:
            try:
                await self.measure_once()
            except Exception as exc:
                log.warning("scheduler.measure_failed", error=str(exc))
            await asyncio.sleep(5.0)

    async def measure_once(self) -> None:
        # One pass over the open petitions (it is every 5 s, on every replica).
        rows = await self._pool.fetch(
            "select level, count(due_at) as pending, min(due_at) as oldest, count(*) as n"
            " from meetings.petition_deadlines group by level"
        )
        self._metrics.deadlines_pending.set(sum(r["pending"] for r in rows))
        counts = {r["level"]: r["n"] for r in rows if r["level"] is not None}
        self._levels_seen |= counts.keys()
        for level in self._levels_seen:  # a level that emptied reads 0, not its past
            self._metrics.petitions_open.labels(level).set(counts.get(level, 0))
        oldest = min((r["oldest"] for r in rows if r["oldest"] is not None), default=None)
        overdue = (self._clock.now() - oldest).total_seconds() if oldest else 0.0
        self._metrics.oldest_overdue_seconds.set(max(overdue, 0.0))
        off = await units_off_the_ladder(self._pool, self._policy)
        self._metrics.units_off_the_ladder.set(sum(off.values()))


async def units_off_the_ladder(pool: asyncpg.Pool, policy: PetitionPolicy) -> dict[str, int]:
    """Units above the wards (units with units under them) whose level is no rung of the
    ladder, by level. Escalation looks for ancestors by the rungs' names and passes these
    over, so a tree registered with other names (e.g. "quan" for "district") leaves the
    ward as the top: its petitions stop there, marked overdue."""
    rows = await pool.fetch(
        "select u.level, count(*) as n from meetings.org_units u"
        " where not (u.level = any($1::text[]))"
        " and exists (select 1 from meetings.org_units c where c.parent_id = u.unit_id)"
        " group by u.level",
        policy.level_names,
    )
    return {r["level"]: r["n"] for r in rows}


async def warn_of_levels_off_the_ladder(
    pool: asyncpg.Pool, policy: PetitionPolicy, listed: int = 100
) -> list[str]:
    """At start-up: open petitions held at a level the configured ladder no longer has
    (PETITION_LADDER changed under them). Their commands are refused (``unknown_level``)
    until an operator moves them, so say so once, loudly, with the first of them. Units
    above the wards whose level no rung has are named too (``units_off_the_ladder``)."""
    units = await units_off_the_ladder(pool, policy)
    if units:
        log.warning("org.levels_off_the_ladder", ladder=policy.level_names, units_by_level=units)
    rows = await pool.fetch(
        "select petition_id, ward_id, level from meetings.petition_deadlines"
        " where level is not null and not (level = any($1::text[]))"
        " order by petition_id limit $2",
        policy.level_names,
        listed,
    )
    if rows:
        log.warning(
            "petitions.levels_off_the_ladder",
            ladder=policy.level_names,
            levels=sorted({r["level"] for r in rows}),
            petitions=[f"{r['ward_id']}/{r['petition_id']}@{r['level']}" for r in rows],
            listed_at_most=listed,
        )
    return [r["petition_id"] for r in rows]
