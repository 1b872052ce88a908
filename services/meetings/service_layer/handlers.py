"""One path for every command, whichever door it came in by (HTTP or Kafka).

A batch is decided in memory and written with a handful of statements, in one
transaction, whatever its size: that is what makes the Kafka door fast. Rule violations
and missing rights are refused per command and leave nothing behind. If another writer
moved one of the batch's streams meanwhile (a replica, the HTTP door), the batch is
redone one command at a time, each in a transaction of its own, so that only the loser
is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import asyncpg

from services.meetings.adapters import write_models
from services.meetings.adapters.event_store import (
    AppendResult,
    ConcurrencyConflict,
    EventMetadata,
    KeyedResult,
    NewEvent,
    PostgresEventStore,
    StreamAdvance,
)
from services.meetings.adapters.ids import new_uuid
from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.adapters.org_directory import OrgDirectory
from services.meetings.domain import (
    cell,
    contact,
    meeting,
    orientation,
    petition,
    unit,
    ward_report,
)
from services.meetings.domain.cell import Cell
from services.meetings.domain.errors import DomainRejection
from services.meetings.domain.petition import PetitionPolicy, Scope, Unit
from shared.auth import WRITER_ROLES, AuthError, Principal, forbidden_role, forbidden_scope
from shared.clock import Clock
from shared.contract import DomainEvent, ScheduleMeeting
from shared.contract.commands import (
    AcknowledgePetition,
    AdmitMember,
    AdoptResolution,
    AppointOfficial,
    AppointUnitOfficial,
    CancelMeeting,
    CloseMeeting,
    Command,
    CompleteTask,
    EraseContactDetails,
    EscalateOverduePetition,
    EscalatePetition,
    ExemptMember,
    IssueOrientation,
    OpenMeeting,
    RaisePetition,
    RegisterCell,
    RegisterUnit,
    ReopenPetition,
    RescheduleMeeting,
    ResolvePetition,
    SetContactDetails,
    SubmitWardReport,
    TransferMember,
)
from shared.contract.events import (
    MeetingOpened,
    MeetingScheduled,
    OrientationIssued,
    PetitionEscalated,
    PetitionMarkedOverdue,
)
from shared.logs import get_logger


@dataclass(frozen=True)
class CommandContext:
    """Where a command came from; becomes the metadata of the events it produces."""

    principal: Principal
    source: str
    door: str  # "http", "kafka" or "scheduler"
    idempotency_key: str | None = None
    # The key as the HTTP door stored it before keys were kept per caller: it answers
    # only the caller whose events it names (see CommandBus._replays).
    legacy_idempotency_key: str | None = None
    correlation_id: uuid.UUID = field(default_factory=new_uuid)
    causation_id: uuid.UUID | None = None
    occurred_at: datetime | None = None  # when it happened at the source; else when received


@dataclass(frozen=True)
class Rejection:
    """Why a command was refused: a stable code and texts for officials and developers."""

    code: str
    status: int
    message_vi: str
    message_en: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, exc: Exception) -> Rejection:
        if isinstance(exc, DomainRejection):
            return cls(exc.code, exc.status, exc.message_vi, exc.message_en, exc.details)
        if isinstance(exc, AuthError):
            return cls(exc.code, exc.status, exc.message_vi, exc.message_en)
        if isinstance(exc, ConcurrencyConflict):
            return cls(
                "concurrency_conflict",
                409,
                "Dữ liệu đã được người khác thay đổi; hãy tải lại và thử lại.",
                "The stream changed since it was read; reload and retry.",
                {
                    "stream_id": exc.stream_id,
                    "expected_version": exc.expected,
                    "actual_version": exc.actual,
                },
            )
        raise exc


Outcome = AppendResult | Rejection
log = get_logger(__name__)
# A redone command is decided at most twice: the second attempt answers a rival that
# stored the same idempotency key meanwhile; a conflict after that is a real one.
REDO_ATTEMPTS = 2

_COUNTED_EVENTS = frozenset({PetitionEscalated, PetitionMarkedOverdue, MeetingOpened})
_ContactCommand = SetContactDetails | EraseContactDetails
_CONTACT = (SetContactDetails, EraseContactDetails)


@dataclass
class Written:
    """What a batch wrote: each stream's history now, and the new events."""

    streams: list[tuple[str, list[DomainEvent]]]
    events: list[DomainEvent]

    def __iadd__(self, other: Written) -> Written:
        self.streams += other.streams
        self.events += other.events
        return self


class CellMemo:
    """Cells replayed from their history, kept across batches: a meeting's or petition's
    decision reads its cell, and replaying a cell's roll (tens of events) for each of
    them was most of the intake's CPU per ScheduleMeeting. A cell is reused while its
    history is the same list of event objects: the same length and the same last event
    (held here, so its identity cannot pass to another object). Decisions only read it."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._cells: dict[str, tuple[DomainEvent, int, Cell]] = {}

    def replay(self, cell_id: str, events: list[DomainEvent]) -> Cell:
        if not events:
            return Cell.replay(cell_id, events)
        kept = self._cells.get(cell_id)
        if kept is not None and kept[0] is events[-1] and kept[1] == len(events):
            return kept[2]
        replayed = Cell.replay(cell_id, events)
        if len(self._cells) >= self._capacity:
            self._cells.clear()  # rare: more cells than the stream cache keeps
        self._cells[cell_id] = (events[-1], len(events), replayed)
        return replayed


@dataclass(frozen=True)
class Inputs:
    """What a decision may know besides its own stream: other streams it reads (the cell's
    roll), the time now, the petition ladder, the units above each ward (nearest first,
    with their levels), earlier petitions about the same place, and the ward each person
    belongs to now."""

    now: datetime
    streams: dict[str, list[DomainEvent]]
    policy: PetitionPolicy
    chains: dict[str, list[Unit]] = field(default_factory=dict)
    similar: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    # The ward each person named by a contact command belongs to now, where known.
    person_wards: dict[str, str] = field(default_factory=dict)
    cells: CellMemo | None = None

    def orientation(self, orientation_id: str | None) -> OrientationIssued | None:
        if orientation_id is None:
            return None
        events = self.streams.get(orientation.stream_id(orientation_id), [])
        return next((e for e in events if isinstance(e, OrientationIssued)), None)

    def cell(self, cell_id: str) -> Cell:
        events = self.streams.get(cell.stream_id(cell_id), [])
        if self.cells is None:
            return Cell.replay(cell_id, events)
        return self.cells.replay(cell_id, events)

    def chain(self, c: Command) -> list[Unit]:
        """The units above the command's ward, when the batch needed them (escalations,
        and petition commands from a scope above the ward); else none."""
        return self.chains.get(c.scope()[0], [])

    def similar_to(self, c: RaisePetition) -> list[str]:
        return list(self.similar.get(_similarity_key(c), []))


# Petition commands after the raising: authorised against the unit that holds the
# petition, in the decision, where its state is known (Petition._require_held_within).
_HELD = frozenset(
    {
        AcknowledgePetition,
        ResolvePetition,
        EscalatePetition,
        EscalateOverduePetition,
        ReopenPetition,
    }
)
_CLIMBING = frozenset({EscalatePetition, EscalateOverduePetition})
_AT_OR_BELOW_WARD = frozenset({"system", "ward", "cell"})


def _scope(principal: Principal) -> Scope:
    return Scope(principal.scope_level, principal.scope_unit)


def _similarity_key(c: RaisePetition) -> tuple[str, str, str]:
    return c.ward_id, c.category.value, petition.place_key(c.place)


@dataclass(frozen=True)
class Route:
    """Which stream a command writes, which it reads, and the aggregate's decision (given
    the command, its stream, the inputs and the scope of the one acting)."""

    target: Callable[[Any], tuple[str, str]]  # command -> (stream id, ward id)
    decide: Callable[[Any, list[DomainEvent], Inputs, Scope], list[DomainEvent]]
    reads: Callable[[Any], list[str]] = lambda _: []
    # Data that must not enter the log (personal data), written in the same transaction.
    store: Callable[[asyncpg.Connection, Any], Awaitable[None]] | None = None
    # The ward of a stream that outlives the command's ward (a person's: people move), from
    # its history; it keys the stream's events. Else the target's ward.
    stream_ward: Callable[[Any, list[DomainEvent]], str] | None = None


def _meeting(c: Any) -> tuple[str, str]:
    return meeting.stream_id(c.meeting_id), c.ward_id


def _cell(c: Any) -> tuple[str, str]:
    return cell.stream_id(c.cell_id), c.ward_id


def _reads_cell(c: Any) -> list[str]:
    return [cell.stream_id(c.cell_id)]


def _m(c: Any, h: list[DomainEvent]) -> meeting.Meeting:
    return meeting.Meeting.replay(c.meeting_id, h)


def _c(c: Any, h: list[DomainEvent]) -> cell.Cell:
    return cell.Cell.replay(c.cell_id, h)


def _petition(c: Any) -> tuple[str, str]:
    return petition.stream_id(c.petition_id), c.ward_id


def _p(c: Any, h: list[DomainEvent]) -> petition.Petition:
    return petition.Petition.replay(c.petition_id, h)


ROUTES: dict[type[Command], Route] = {
    RegisterUnit: Route(
        lambda c: (unit.stream_id(c.unit_id), c.unit_id), lambda c, h, i, _: unit.register(c, h)
    ),
    RaisePetition: Route(
        _petition,
        lambda c, h, i, _: _p(c, h).raise_(c, i.policy, i.now, i.similar_to(c), i.cell(c.cell_id)),
        _reads_cell,
    ),
    # Acted on by the unit holding the petition, or one above it: decided with its state.
    AcknowledgePetition: Route(
        _petition, lambda c, h, i, by: _p(c, h).acknowledge(c, i.now, by, i.chain(c))
    ),
    ResolvePetition: Route(
        _petition, lambda c, h, i, by: _p(c, h).resolve(c, i.now, by, i.chain(c))
    ),
    EscalatePetition: Route(
        _petition, lambda c, h, i, by: _p(c, h).escalate(c, i.policy, i.now, i.chain(c), by)
    ),
    EscalateOverduePetition: Route(
        _petition,
        lambda c, h, i, by: _p(c, h).escalate_overdue(c, i.policy, i.now, i.chain(c), by),
    ),
    ReopenPetition: Route(
        _petition, lambda c, h, i, by: _p(c, h).reopen(c, i.policy, i.now, by, i.chain(c))
    ),
    RegisterCell: Route(_cell, lambda c, h, i, _: _c(c, h).register(c)),
    AdmitMember: Route(_cell, lambda c, h, i, _: _c(c, h).admit(c)),
    ExemptMember: Route(_cell, lambda c, h, i, _: _c(c, h).exempt(c)),
    TransferMember: Route(_cell, lambda c, h, i, _: _c(c, h).transfer_out(c)),
    ScheduleMeeting: Route(
        _meeting,
        lambda c, h, i, _: _m(c, h).schedule(c, i.cell(c.cell_id), i.orientation(c.orientation_id)),
        # The cell, to check it is the ward's: one stream per distinct cell of a batch.
        lambda c: (
            _reads_cell(c) + ([orientation.stream_id(c.orientation_id)] if c.orientation_id else [])
        ),
    ),
    AppointOfficial: Route(_cell, lambda c, h, i, _: _c(c, h).appoint(c)),
    AppointUnitOfficial: Route(
        lambda c: (unit.stream_id(c.unit_id), c.unit_id), lambda c, h, i, _: unit.appoint(c, h)
    ),
    SetContactDetails: Route(
        lambda c: (contact.stream_id(c.person_id), c.ward_id),
        lambda c, h, i, _: contact.change(c, h, i.person_wards.get(c.person_id)),
        store=write_models.store_contact,
        stream_ward=lambda c, h: contact.stream_ward(h, c.ward_id),
    ),
    EraseContactDetails: Route(
        lambda c: (contact.stream_id(c.person_id), c.ward_id),
        lambda c, h, i, _: contact.erase(c, h, i.person_wards.get(c.person_id)),
        store=write_models.erase_contact,
        stream_ward=lambda c, h: contact.stream_ward(h, c.ward_id),
    ),
    IssueOrientation: Route(
        lambda c: (orientation.stream_id(c.orientation_id), c.ward_id),
        lambda c, h, i, _: orientation.issue(c, h, i.now),
    ),
    SubmitWardReport: Route(
        lambda c: (ward_report.stream_id(c.ward_id, c.month), c.ward_id),
        lambda c, h, i, _: ward_report.submit(c, h, i.now),
    ),
    RescheduleMeeting: Route(_meeting, lambda c, h, i, _: _m(c, h).reschedule(c)),
    CancelMeeting: Route(_meeting, lambda c, h, i, _: _m(c, h).cancel(c)),
    OpenMeeting: Route(
        _meeting, lambda c, h, i, _: _m(c, h).open(c, i.cell(c.cell_id), i.now), _reads_cell
    ),
    AdoptResolution: Route(
        # The cell's roll: only its full members vote.
        _meeting,
        lambda c, h, i, _: _m(c, h).adopt_resolution(c, i.cell(c.cell_id)),
        _reads_cell,
    ),
    CompleteTask: Route(_meeting, lambda c, h, i, _: _m(c, h).complete_task(c, i.now)),
    CloseMeeting: Route(
        _meeting, lambda c, h, i, _: _m(c, h).close(c, i.cell(c.cell_id), i.now), _reads_cell
    ),
}


class CommandBus:
    def __init__(
        self,
        store: PostgresEventStore,
        org: OrgDirectory,
        clock: Clock,
        metrics: MeetingsMetrics,
        policy: PetitionPolicy,
    ) -> None:
        self._store = store
        self._org = org
        self._clock = clock
        self._metrics = metrics
        self._policy = policy
        self._command_counters: dict[tuple[str, str, str], Any] = {}
        self._cells = CellMemo()

    async def handle(self, command: Command, ctx: CommandContext) -> Outcome:
        return (await self.handle_batch([(command, ctx)]))[0]

    async def handle_batch(self, items: list[tuple[Command, CommandContext]]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        await self._authorise(items, outcomes)
        _refuse_keys_reused_in_batch(items, outcomes)
        todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
        try:
            # All of the batch or none of it, in one transaction (no savepoint: two round
            # trips fewer per batch on the path taken when no other writer raced us).
            async with self._store.transaction() as conn:
                written = await self._read_keys_and_run(todo, items, outcomes, conn)
        except ConcurrencyConflict as conflict:
            # Another writer moved one of the streams: redo the batch one command per
            # transaction, each seeing what the others committed, so only the loser fails.
            # Not one transaction with a savepoint per command: it would take its id at its
            # first write and then load streams that rivals with higher ids had moved, and
            # the relay, which publishes in transaction id order, would put this writer's
            # version of such a stream before the rival's earlier one.
            self._metrics.batches_redone.inc()
            log.info("commands.batch_redone", commands=len(todo), stream_id=conflict.stream_id)
            written = Written([], [])
            for i in todo:
                outcomes[i] = None
            async with self._store.connection() as conn:
                for i in todo:
                    written += await self._redo_one(i, items, outcomes, conn)
        for stream_id, history in written.streams:
            self._store.remember(stream_id, history)
        self._count_decisions(written)
        self._log_and_count(items, outcomes)
        return [o for o in outcomes if o is not None]

    async def _redo_one(
        self,
        i: int,
        items: list[tuple[Command, CommandContext]],
        outcomes: list[Outcome | None],
        conn: asyncpg.Connection,
    ) -> Written:
        """One command of a redone batch, in a transaction of its own. A rival can still
        commit between its key read and its write (the same message through another
        replica): decided once more, it reads the key the rival stored and is answered
        as a replay. A second conflict is a real one, and refuses it."""
        for attempt in range(REDO_ATTEMPTS):
            try:
                async with conn.transaction():
                    return await self._read_keys_and_run([i], items, outcomes, conn)
            except ConcurrencyConflict as exc:
                outcomes[i] = None
                if attempt == REDO_ATTEMPTS - 1:
                    conflict = await self._store.conflict_details(conn, exc)
                    outcomes[i] = Rejection.of(conflict)
        return Written([], [])

    async def _read_keys_and_run(
        self,
        indices: list[int],
        items: list[tuple[Command, CommandContext]],
        outcomes: list[Outcome | None],
        conn: asyncpg.Connection,
    ) -> Written:
        """In the caller's transaction: the earlier results of the commands' idempotency
        keys, read before any stream is loaded or written, then the other commands."""
        keys = [k for i in indices if (k := items[i][1].idempotency_key)]
        legacy = [k for i in indices if (k := items[i][1].legacy_idempotency_key)]
        earlier = await self._store.results_for_keys(keys + legacy if legacy else keys, conn)
        if earlier:
            earlier = await self._replays(indices, items, outcomes, earlier, conn)
            indices = [i for i in indices if outcomes[i] is None]
        return await self._run(indices, items, outcomes, earlier, conn)

    async def _replays(
        self,
        indices: list[int],
        items: list[tuple[Command, CommandContext]],
        outcomes: list[Outcome | None],
        stored: dict[str, AppendResult],
        conn: asyncpg.Connection,
    ) -> dict[str, AppendResult]:
        """The stored results that answer these commands, by key. A key stored for another
        command (another stream or command type) refuses the command instead: answering
        it would drop it. A legacy key answers only the caller who wrote its events;
        for anyone else it does not exist."""
        answers: dict[str, AppendResult] = {}
        for i in indices:
            command, ctx = items[i]
            if (key := ctx.idempotency_key) is None:
                continue
            result = stored.get(key)
            legacy = ctx.legacy_idempotency_key
            if result is None and legacy is not None and legacy in stored:
                if await self._store.written_by(conn, stored[legacy], ctx.principal.actor):
                    result = stored[legacy]
            if result is None:
                continue
            if _another_command(command, result.stream_id, result.command_type):
                outcomes[i] = _key_reused(result.stream_id, result.command_type)
            else:
                answers[key] = result
        return answers

    def _count_decisions(self, written: Written) -> None:
        """Committed now: count what was decided. Only a few event types are counted, so
        the type check comes first (isinstance on pydantic models goes through ABCMeta)."""
        counted = [e for e in written.events if type(e) in _COUNTED_EVENTS]
        if not counted:
            return
        meeting_kinds = {}
        for _, history in written.streams:
            for event in history[:1]:
                if isinstance(event, MeetingScheduled):
                    meeting_kinds[event.meeting_id] = event.kind.value
        for event in counted:
            if isinstance(event, PetitionEscalated):
                self._metrics.escalations.labels(event.to_level, event.reason.value).inc()
            elif isinstance(event, PetitionMarkedOverdue):
                self._metrics.escalations.labels(event.level, "overdue_at_top").inc()
            elif isinstance(event, MeetingOpened):
                kind = meeting_kinds.get(event.meeting_id, "unknown")
                self._metrics.meetings_held.labels(kind).inc()

    def _log_and_count(
        self, items: list[tuple[Command, CommandContext]], outcomes: list[Outcome | None]
    ) -> None:
        # A batch (Kafka door, scheduler) logs one summary line at info and each accepted
        # command at debug: a JSON line per command cost ~15% of the intake's CPU. A
        # rejection, and a batch of one (HTTP), still get their own line at info.
        each_at_info = len(items) == 1
        debug = log.is_enabled_for(logging.DEBUG)
        tally: Counter[tuple[str, str, str]] = Counter()
        for (command, ctx), outcome in zip(items, outcomes, strict=True):
            label = _outcome_label(outcome)
            tally[command.command_type, ctx.door, label] += 1
            if each_at_info or debug or isinstance(outcome, Rejection):
                # Its correlation id follows the command through every service.
                (log.info if each_at_info or isinstance(outcome, Rejection) else log.debug)(
                    "command.handled",
                    command=command.command_type,
                    outcome=label,
                    door=ctx.door,
                    correlation_id=str(ctx.correlation_id),
                    causation_id=str(ctx.causation_id) if ctx.causation_id else None,
                    stream_id=outcome.stream_id if isinstance(outcome, AppendResult) else None,
                    event_ids=[str(e) for e in outcome.event_ids]
                    if isinstance(outcome, AppendResult)
                    else None,
                )
        for (command_type, door, label), n in tally.items():
            child = self._command_counters.get((command_type, door, label))
            if child is None:  # labels() costs a lock and a dict look-up per call
                child = self._metrics.commands.labels(command_type, door, label)
                self._command_counters[command_type, door, label] = child
            child.inc(n)
        if len(items) > 1:
            log.info(
                "commands.batch_handled",
                commands=len(items),
                outcomes={f"{c}/{d}/{o}": n for (c, d, o), n in sorted(tally.items())},
            )

    async def _run(
        self,
        indices: list[int],
        items: list[tuple[Command, CommandContext]],
        outcomes: list[Outcome | None],
        earlier: dict[str, AppendResult],
        conn: asyncpg.Connection,
    ) -> Written:
        """Decide the commands in order against their streams, then write them at once."""
        targets = {i: ROUTES[type(items[i][0])].target(items[i][0]) for i in indices}
        reads = [sid for i in indices for sid in ROUTES[type(items[i][0])].reads(items[i][0])]
        histories = await self._store.load_many([sid for sid, _ in targets.values()] + reads, conn)
        now = self._clock.now()
        commands = [items[i][0] for i in indices]
        raising = [c for c in commands if type(c) is RaisePetition]
        people = [cast(_ContactCommand, c).person_id for c in commands if type(c) in _CONTACT]
        # The units above a ward: where an escalation goes, and whether a scope above the
        # ward covers the petition's holder. One query per batch.
        climbing = {
            c.scope()[0]
            for c, ctx in (items[i] for i in indices)
            if type(c) in _CLIMBING
            or (type(c) in _HELD and ctx.principal.scope_level not in _AT_OR_BELOW_WARD)
        }
        inputs = Inputs(
            now=now,
            streams=histories,
            policy=self._policy,
            chains=await self._org.chains(climbing, conn),
            similar=await write_models.similar_petitions(
                conn,
                list({_similarity_key(c) for c in raising}),
                now - self._policy.recurring_window,
            ),
            person_wards=await write_models.person_wards(conn, list(dict.fromkeys(people))),
            cells=self._cells,
        )
        loaded_versions = {sid: len(events) for sid, events in histories.items()}
        new_events: list[NewEvent] = []
        planned: list[tuple[int, str, int, int]] = []  # (index, stream, first version, count)
        stream_wards: dict[int, str] = {}  # the ward of each planned command's stream
        first_with_key: dict[str, int] = {}
        for i in indices:
            command, ctx = items[i]
            key = ctx.idempotency_key
            if key is not None and (key in earlier or key in first_with_key):
                continue  # answered below, from the earlier result
            stream_id, ward_id = targets[i]
            history = histories[stream_id]
            route = ROUTES[type(command)]
            if route.stream_ward is not None:
                ward_id = route.stream_ward(command, history)
            try:
                decided = route.decide(command, history, inputs, _scope(ctx.principal))
            except DomainRejection as exc:
                outcomes[i] = Rejection.of(exc)
                continue
            except Exception as exc:  # one command's fault, not the whole batch's
                # A decision that crashes on a value the contract let through (a bug or a
                # gap in its bounds) refuses that command only: bad input never stops the
                # line (design invariant 6). Logged with the trace, and counted to alert.
                outcomes[i] = _invalid_command(command, exc)
                self._metrics.decision_errors.labels(command.command_type).inc()
                log.exception(
                    "command.decision_failed",
                    command=command.command_type,
                    door=ctx.door,
                    correlation_id=str(ctx.correlation_id),
                )
                continue
            meta = self._metadata(ctx)
            first = len(history) + 1
            new_events += [
                NewEvent(stream_id, first + n, ward_id, event, meta, new_uuid())
                for n, event in enumerate(decided)
            ]
            history.extend(decided)
            planned.append((i, stream_id, first, len(decided)))
            stream_wards[i] = ward_id
            if decided and type(command) is AdmitMember:
                # A later contact command in this batch sees the member in the new ward.
                inputs.person_wards[command.member_id] = command.ward_id
            if decided and type(command) is RaisePetition:
                # A later petition in this batch about the same place sees this one.
                inputs.similar.setdefault(_similarity_key(command), []).append(command.petition_id)
            if key is not None:
                first_with_key[key] = i
        # Each moved stream with its ward (a command that moved it names it, or the stream's
        # history does): a refused command may name another ward for the same stream, and
        # the version check compares wards.
        wards = {targets[i][0]: stream_wards[i] for i, _, _, count in planned if count}
        advances = [
            StreamAdvance(sid, ward, loaded_versions[sid], len(histories[sid]))
            for sid, ward in wards.items()
        ]
        keys = [
            KeyedResult(key, stream_id, first + count - 1, count, items[i][0].command_type)
            for i, stream_id, first, count in planned
            if (key := items[i][1].idempotency_key) is not None
        ]
        positions = (
            await self._store.write(conn, advances, new_events, keys) if new_events or keys else []
        )
        await write_models.apply(conn, [e.event for e in new_events])
        for i, _, _, count in planned:
            route = ROUTES[type(items[i][0])]
            if route.store is not None and count:
                await route.store(conn, items[i][0])
        keyed: list[tuple[str, AppendResult]] = []
        at = 0
        for i, stream_id, first, count in planned:
            result = AppendResult(
                stream_id=stream_id,
                stream_version=first + count - 1,
                global_positions=positions[at : at + count],
                event_ids=[e.event_id for e in new_events[at : at + count]],
            )
            at += count
            outcomes[i] = result
            if (key := items[i][1].idempotency_key) is not None:
                keyed.append((key, result))
        replayed = {key: r for key, r in keyed} | earlier
        for i in indices:
            key = items[i][1].idempotency_key
            if outcomes[i] is None and key is not None:
                outcomes[i] = _as_replayed(replayed[key])
        # The streams only read (a cell's roll) are committed rows, a true prefix of each:
        # remembered too, so the next batch naming the same cell reads only what is new.
        read_only = [sid for sid in dict.fromkeys(reads) if sid not in wards]
        return Written(
            [(sid, histories[sid]) for sid in [*wards, *read_only]],
            [e.event for e in new_events],
        )

    async def _authorise(
        self, items: list[tuple[Command, CommandContext]], outcomes: list[Outcome | None]
    ) -> None:
        above_ward = {
            command.scope()[0]
            for command, ctx in items
            if ctx.principal.scope_level not in ("system", "ward", "cell")
        }
        ancestors = await self._org.ancestors(above_ward)
        for i, (command, ctx) in enumerate(items):
            ward, cell = command.scope()
            if ctx.principal.role not in WRITER_ROLES:
                outcomes[i] = Rejection.of(forbidden_role())
            elif type(command) in _HELD and ctx.principal.scope_level == "cell":
                # The command names no cell: whether the petition is this cell's to act on
                # is decided with the petition's holder. Other scopes must at least cover
                # the ward here, as the holder is the ward, one of its cells or above it.
                continue
            elif not ctx.principal.covers(ward, cell, ancestors.get(ward, frozenset())):
                outcomes[i] = Rejection.of(forbidden_scope())

    def _metadata(self, ctx: CommandContext) -> EventMetadata:
        return EventMetadata(
            actor=ctx.principal.actor,
            source=ctx.source,
            occurred_at=ctx.occurred_at or self._clock.now(),
            correlation_id=ctx.correlation_id,
            causation_id=ctx.causation_id,
        )


def _refuse_keys_reused_in_batch(
    items: list[tuple[Command, CommandContext]], outcomes: list[Outcome | None]
) -> None:
    """A key that comes back later in the batch with another command (another stream or
    command type) refuses that command, as a stored key would (CommandBus._replays)."""
    first: dict[str, int] = {}
    for i, (command, ctx) in enumerate(items):
        if (key := ctx.idempotency_key) is None or outcomes[i] is not None:
            continue
        j = first.setdefault(key, i)
        if j != i:
            earlier = items[j][0]
            stream_id = ROUTES[type(earlier)].target(earlier)[0]
            if _another_command(command, stream_id, earlier.command_type):
                outcomes[i] = _key_reused(stream_id, earlier.command_type)


def _another_command(command: Command, stream_id: str, command_type: str | None) -> bool:
    """Whether a key first used for a command of ``command_type`` on ``stream_id`` names
    another command than ``command`` (a key stored before the type was kept, None, is
    compared by its stream only)."""
    return ROUTES[type(command)].target(command)[0] != stream_id or (
        command_type not in (None, command.command_type)
    )


def _key_reused(stream_id: str, command_type: str | None) -> Rejection:
    return Rejection(
        "idempotency_key_reused",
        422,
        "Khóa chống gửi trùng (Idempotency-Key hoặc message_id) này đã được dùng cho một"
        " lệnh khác; mỗi lệnh cần một khóa riêng.",
        "This idempotency key was already used for a different command; use a new key for"
        " each command.",
        {"stream_id": stream_id, "command_type": command_type},
    )


def _invalid_command(command: Command, exc: Exception) -> Rejection:
    return Rejection(
        "invalid_command",
        422,
        "Lệnh có giá trị không xử lý được; hãy kiểm tra lại dữ liệu gửi lên.",
        f"{command.command_type} could not be decided: {type(exc).__name__}: {exc}"[:500],
        {"error": type(exc).__name__},
    )


def _as_replayed(result: AppendResult) -> AppendResult:
    return dataclasses.replace(result, replayed=True)


def _outcome_label(outcome: Outcome | None) -> str:
    if isinstance(outcome, Rejection):
        return f"rejected_{outcome.code}"
    if isinstance(outcome, AppendResult) and outcome.replayed:
        return "replayed"
    return "accepted"
