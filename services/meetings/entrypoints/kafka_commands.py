"""Kafka door: upstream systems publish `InboundCommand` envelopes on the commands topic.

Records are read in batches and handed to the same command bus as HTTP, one
transaction per batch. Whatever cannot be accepted — unreadable bytes, an unknown type,
an invalid payload, a source not on the allow-list, a broken rule — goes to the DLQ
topic with the reason and the original bytes, and the records after it keep flowing.
A batch that fails for an infrastructure reason (database down) is not acknowledged:
every partition in it is rewound and read again after a pause. A batch whose write the
database refuses for a value in it (a ``DataError``: it would fail again on every retry)
is carried out again one command at a time, and the command that fails alone is
dead-lettered (``unstorable``).
"""

# No `from __future__ import annotations`: FastStream reads the handler's annotations at runtime.
from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker, KafkaMessage
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field, TypeAdapter, ValidationError, create_model

from services.meetings.adapters.event_store import is_unstorable
from services.meetings.service_layer.handlers import CommandBus, CommandContext, Outcome, Rejection
from shared.auth import Principal, Role
from shared.clock import Clock
from shared.consumer import batch_records, rewind_and_pause
from shared.contract.commands import COMMAND_TYPES, Command
from shared.contract.inbound import InboundCommand
from shared.contract.upcasting import upcast
from shared.dead_letters import DeadLetterPublisher
from shared.logs import get_logger
from shared.settings import KafkaSettings

log = get_logger(__name__)

MAX_CLOCK_SKEW = timedelta(minutes=5)
# Why the door itself refuses a record; rule violations add rejected_<code>.
DOOR_REASONS = (
    "malformed_envelope",
    "unauthorised_source",
    "unknown_command",
    "invalid_payload",
    "implausible_time",
    "wrong_key",
    "unstorable",
)


def _typed_envelopes() -> TypeAdapter[Any]:
    """One parse for a record of a command's current version: the envelope with its payload
    typed as the command, chosen by ``type``. Each is `InboundCommand` with ``type`` and
    ``payload`` narrowed, so whatever it accepts the two-step reading (the envelope, then
    the payload dict) accepts too, to the same command. Anything it refuses (another
    version, an unknown type, any invalid field) is read again the two-step way, which
    names the reason."""
    typed: list[Any] = []
    for name, cls in COMMAND_TYPES.items():
        tag: Any = Literal[name]
        typed.append(
            create_model(
                f"Inbound{name}", __base__=InboundCommand, type=(tag, ...), payload=(cls, ...)
            )
        )
    union: Any = Annotated[Union[tuple(typed)], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(union)


_TYPED_ENVELOPES = _typed_envelopes()


class DeadLetter(Exception):
    def __init__(self, reason: str, detail: str, message_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.message_id = message_id


class KafkaCommandIntake:
    def __init__(
        self,
        bus: CommandBus,
        broker: KafkaBroker,
        settings: KafkaSettings,
        allowed_sources: frozenset[str],
        clock: Clock,
        dead_lettered: Counter,
    ) -> None:
        self._bus = bus
        self._allowed_sources = allowed_sources
        self._clock = clock
        self._failures_in_a_row = 0
        self._publishers: dict[str, Principal] = {}
        self._dead_letters = DeadLetterPublisher(broker, settings.dlq_topic)
        self.dead_lettered = dead_lettered

    @staticmethod
    def dlq_counter(settings: KafkaSettings, registry: CollectorRegistry) -> Counter:
        """One counter for every consumer of the intake."""
        counter = Counter(
            "chibo_dlq_records_total",
            "Records sent to a dead-letter topic, by topic and reason.",
            ["topic", "reason"],
            registry=registry,
        )
        for reason in DOOR_REASONS:  # visible at 0 from the start: the first one alerts
            counter.labels(settings.dlq_topic, reason)
        return counter

    async def __call__(self, message: KafkaMessage) -> None:
        records = batch_records(message)
        try:
            await self._process(records)
        except Exception:
            # Database down, broker hiccup, or a bug: never acknowledge what was not handled.
            await self._retry_later(message, records)
            return
        self._failures_in_a_row = 0
        await message.ack()

    async def _process(self, records: list[ConsumerRecord]) -> None:
        accepted: list[tuple[int, Command, CommandContext, str]] = []
        dead: list[tuple[ConsumerRecord, DeadLetter]] = []
        for i, record in enumerate(records):
            try:
                command, ctx, message_id = self._read(record)
            except DeadLetter as letter:
                dead.append((record, letter))
            else:
                accepted.append((i, command, ctx, message_id))
        batch = [(c, ctx) for _, c, ctx, _ in accepted]
        outcomes: list[Outcome | Exception]
        try:
            outcomes = list(await self._bus.handle_batch(batch))
        except Exception as exc:
            if not is_unstorable(exc):
                raise  # database down, a bug: the batch is rewound and read again
            outcomes = await self._one_by_one(batch, exc)
        for (i, _, _, message_id), outcome in zip(accepted, outcomes, strict=True):
            if isinstance(outcome, Rejection):
                reason = f"rejected_{outcome.code}"
                dead.append((records[i], DeadLetter(reason, outcome.message_en, message_id)))
            elif isinstance(outcome, Exception):
                detail = f"the database refused a value: {type(outcome).__name__}: {outcome}"
                dead.append((records[i], DeadLetter("unstorable", detail, message_id)))
        for record, dead_letter in dead:
            await self._dead_letter(record, dead_letter)

    async def _one_by_one(
        self, batch: list[tuple[Command, CommandContext]], failure: Exception
    ) -> list[Outcome | Exception]:
        """The batch's write was refused for a value in it, and was rolled back: carry
        out each command alone, so that only the one the database refuses is left (its
        error in its place). Commands done before a transient failure here are replayed
        from their idempotency keys when the rewound batch is read again."""
        log.warning(
            "intake.batch_isolating", commands=len(batch), error=f"{type(failure).__name__}"
        )
        outcomes: list[Outcome | Exception] = []
        for item in batch:
            try:
                outcomes += await self._bus.handle_batch([item])
            except Exception as exc:
                if not is_unstorable(exc):
                    raise
                log.error(
                    "intake.command_unstorable",
                    command=item[0].command_type,
                    correlation_id=str(item[1].correlation_id),
                    error=f"{type(exc).__name__}: {exc}"[:500],
                )
                outcomes.append(exc)
        return outcomes

    def _read(self, record: ConsumerRecord) -> tuple[Command, CommandContext, str]:
        value = record.value or b""
        try:
            envelope = _TYPED_ENVELOPES.validate_json(value)
            command = envelope.payload
            if envelope.version != command.schema_version:
                raise LookupError(envelope.version)  # an older version: upcast below
        except (ValidationError, LookupError):
            envelope, command = self._read_in_two_steps(value)
        else:
            self._check_source(envelope)
        if envelope.occurred_at > self._clock.now() + MAX_CLOCK_SKEW:
            raise DeadLetter(
                "implausible_time", "occurred_at is in the future", envelope.message_id
            )
        key_ward = (record.key or b"").decode(errors="replace")
        if key_ward != command.scope()[0]:
            # The key decides the partition, and so the order; a wrong key breaks per-ward order.
            raise DeadLetter(
                "wrong_key",
                f"record key {key_ward!r} is not the command's ward id",
                envelope.message_id,
            )
        ctx = CommandContext(
            principal=self._publisher(envelope.source),
            source=envelope.source,
            door="kafka",
            idempotency_key=f"kafka:{envelope.source}:{envelope.message_id}",
            occurred_at=envelope.occurred_at,
            **({"correlation_id": envelope.correlation_id} if envelope.correlation_id else {}),
        )
        return command, ctx, envelope.message_id

    def _read_in_two_steps(self, value: bytes) -> tuple[InboundCommand, Command]:
        """The envelope, then its payload as the command type names (lifted from an older
        version): what refuses a record, and why, is decided here."""
        try:
            envelope = InboundCommand.model_validate_json(value)
        except ValidationError as exc:
            raise DeadLetter("malformed_envelope", _errors(exc)) from exc
        self._check_source(envelope)  # first: a source not on the list is refused whatever it sent
        command_type = COMMAND_TYPES.get(envelope.type)
        try:
            if command_type is None:
                raise LookupError(envelope.type)
            # Older versions stay accepted: they are lifted to the current one.
            payload = upcast(
                envelope.type, envelope.version, envelope.payload, command_type.schema_version
            )
        except LookupError as exc:
            raise DeadLetter(
                "unknown_command",
                f"no command {envelope.type!r} version {envelope.version}",
                envelope.message_id,
            ) from exc
        try:
            command = command_type.model_validate(payload)
        except ValidationError as exc:
            raise DeadLetter("invalid_payload", _errors(exc), envelope.message_id) from exc
        return envelope, command

    def _check_source(self, envelope: InboundCommand) -> None:
        if envelope.source not in self._allowed_sources:
            raise DeadLetter(
                "unauthorised_source",
                f"source {envelope.source!r} is not allow-listed",
                envelope.message_id,
            )

    def _publisher(self, source: str) -> Principal:
        """One principal per allow-listed source, made once: this is the per-record hot path."""
        principal = self._publishers.get(source)
        if principal is None:
            principal = Principal(subject=source, role=Role.SYSTEM_PUBLISHER, scope_level="system")
            self._publishers[source] = principal
        return principal

    async def _dead_letter(self, record: ConsumerRecord, letter: DeadLetter) -> None:
        extra = {"dlq_message_id": letter.message_id} if letter.message_id else None
        copy = await self._dead_letters.publish(record, letter.reason, letter.detail, extra)
        self.dead_lettered.labels(self._dead_letters.topic, letter.reason).inc()
        log.warning("intake.dead_lettered", reason=letter.reason, source=copy.source)

    async def _retry_later(self, message: KafkaMessage, records: list[ConsumerRecord]) -> None:
        self._failures_in_a_row += 1
        log.exception("intake.batch_failed", records=len(records))
        await rewind_and_pause(message, records, self._failures_in_a_row)


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
    )[:2000]
