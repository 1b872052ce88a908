-- Exactly-once tracking: the last applied version of each stream (see shared/consumer.py).
create table notifications.applied_streams (
    stream_id  text primary key,
    version    integer not null,
    applied_at timestamptz not null default now()
);

-- The delivery log and outbox: one row per (trigger event, recipient, channel), whatever
-- the number of redeliveries. The dispatcher sends pending rows and marks them sent.
create table notifications.deliveries (
    delivery_id      bigint generated always as identity primary key,
    trigger_event_id uuid not null,
    trigger          text not null,
    recipient        text not null,
    channel          text not null,
    subject          text not null,
    body_text        text not null,
    body_html        text not null,
    status           text not null default 'pending'
                     check (status in ('pending', 'sent', 'failed')),
    attempts         integer not null default 0,
    last_error       text,
    next_attempt_at  timestamptz not null default now(),
    created_at       timestamptz not null default now(),
    sent_at          timestamptz,
    unique (trigger_event_id, recipient, channel)
);
create index deliveries_pending on notifications.deliveries (next_attempt_at, delivery_id)
    where status = 'pending';
