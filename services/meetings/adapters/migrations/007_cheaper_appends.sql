-- Cheaper appends: the Kafka door writes thousands of events a second, and these checks
-- were a large part of what PostgreSQL spent on each.
--
-- 1. The foreign key events.stream_id → streams goes. It checked each new event with a
--    FOR KEY SHARE lock of its stream's row: about a third of the event insert's time.
--    The store writes a stream's row (inserts it, or moves its version from the one its
--    writer loaded) in the same statement as the stream's events, and inserts only the
--    events of streams whose row it wrote (adapters/event_store.py, PostgresEventStore.write);
--    unique (stream_id, stream_version) still refuses a second writer of a version. No
--    other code writes meetings.events, and nothing deletes streams.
-- 2. An idempotency key now keeps where its command's events are (the stream's version after
--    them and how many there were) instead of a JSON copy of the result: a replay reads the
--    event ids and positions back from meetings.events, by (stream_id, stream_version). Rows
--    written before keep their `result`, and a replay of them reads it as before.
alter table meetings.events drop constraint events_stream_id_fkey;

alter table meetings.idempotency_keys
    alter column result drop not null,
    add column stream_version integer,
    add column event_count integer,
    add constraint idempotency_keys_result_or_events
        check (result is not null or (stream_version is not null and event_count is not null));
