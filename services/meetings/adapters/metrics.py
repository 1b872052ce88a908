"""The meetings service's Prometheus metrics, on one registry per process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class MeetingsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.commands = Counter(
            "chibo_commands_total",
            "Commands handled, by command type, door and outcome.",
            ["command", "door", "outcome"],
            registry=registry,
        )
        self.batches_redone = Counter(
            "chibo_command_batches_redone_total",
            "Command batches rolled back because another writer moved one of their streams,"
            " and redone one command per transaction.",
            registry=registry,
        )
        self.decision_errors = Counter(
            "chibo_command_decision_errors_total",
            "Commands whose decision raised an unexpected error (a bug, or a value the"
            " contract let through), refused as invalid_command, by command type.",
            ["command"],
            registry=registry,
        )
        self.events_appended = Counter(
            "chibo_events_appended_total",
            "Events appended to the event store.",
            ["event_type"],
            registry=registry,
        )
        self.append_seconds = Histogram(
            "chibo_event_append_duration_seconds",
            "Time to write one batch of events (one or more commands' worth), in seconds.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.relay_published = Counter(
            "chibo_relay_published_events_total",
            "Events the relay published to Kafka (a re-publish after a crash counts again).",
            registry=registry,
        )
        self.relay_lag_events = Gauge(
            "chibo_relay_lag_events",
            "Committed events not yet published to Kafka.",
            registry=registry,
        )
        self.relay_lag_seconds = Gauge(
            "chibo_relay_lag_seconds",
            "Age of the oldest committed event not yet published, in seconds.",
            registry=registry,
        )
        self.relay_checkpoint_ahead = Gauge(
            "chibo_relay_checkpoint_ahead",
            "1 when the relay's checkpoint names a transaction id this database has not"
            " reached (restored from a logical dump): nothing past it would ever be published.",
            registry=registry,
        )
        self.relay_errors = Counter(
            "chibo_relay_errors_total",
            "Relay rounds that failed and will be retried.",
            ["stage"],
            registry=registry,
        )
        self.deadlines_pending = Gauge(
            "chibo_petition_deadlines_pending",
            "Open petitions with a deadline the scheduler will act on.",
            registry=registry,
        )
        self.oldest_overdue_seconds = Gauge(
            "chibo_petition_oldest_overdue_seconds",
            "How long the most overdue deadline has been waiting for its escalation.",
            registry=registry,
        )
        self.escalations = Counter(
            "chibo_petition_escalations_total",
            "Petitions sent up a level, or marked overdue at the top, by level and reason.",
            ["level", "reason"],
            registry=registry,
        )
        self.units_off_the_ladder = Gauge(
            "chibo_org_units_off_the_ladder",
            "Units above the wards whose level is no rung of PETITION_LADDER: escalation"
            " passes them over.",
            registry=registry,
        )
        self.petitions_open = Gauge(
            "chibo_petitions_open",
            "Open petitions by the ladder level that holds them (overdue at the top included).",
            ["level"],
            registry=registry,
        )
        self.meetings_held = Counter(
            "chibo_meetings_held_total",
            "Meetings opened with their first roll call, by kind.",
            ["kind"],
            registry=registry,
        )
        self.scheduler_runs = Counter(
            "chibo_deadline_scheduler_runs_total",
            "Scans of due deadlines (a stalled scheduler stops counting).",
            registry=registry,
        )
        self.relay_leader = Gauge(
            "chibo_relay_is_leader",
            "1 when this replica holds the relay lock and publishes.",
            registry=registry,
        )
