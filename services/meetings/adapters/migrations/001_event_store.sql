-- The event store. One row per event; a stream's version is its last event's number.
-- transaction_id lets the relay read in a gap-safe order: see adapters/relay.py.
create table meetings.streams (
    stream_id   text primary key,
    ward_id     text not null,
    version     integer not null check (version > 0)
);

create table meetings.events (
    global_position bigint generated always as identity primary key,
    transaction_id  xid8 not null default pg_current_xact_id(),
    event_id        uuid not null unique,
    stream_id       text not null references meetings.streams (stream_id),
    stream_version  integer not null,
    event_type      text not null,
    schema_version  integer not null,
    ward_id         text not null,
    payload         jsonb not null,
    occurred_at     timestamptz not null,
    recorded_at     timestamptz not null default clock_timestamp(),
    correlation_id  uuid,
    causation_id    uuid,
    actor           text not null,
    source          text not null,
    unique (stream_id, stream_version)
);
create index events_relay_order on meetings.events (transaction_id, global_position);

-- A command sent again with the same key returns the first result and appends nothing.
create table meetings.idempotency_keys (
    idempotency_key text primary key,
    stream_id       text not null,
    result          jsonb not null,
    created_at      timestamptz not null default now()
);

-- How far the relay has published, in relay order.
create table meetings.relay_checkpoint (
    relay_name      text primary key,
    transaction_id  xid8 not null,
    global_position bigint not null,
    updated_at      timestamptz not null default now()
);
