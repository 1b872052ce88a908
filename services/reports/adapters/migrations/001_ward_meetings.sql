-- Exactly-once tracking: the last applied version of each stream (see shared/consumer.py).
create table reports.applied_streams (
    stream_id  text primary key,
    version    integer not null,
    applied_at timestamptz not null default now()
);

-- The walking skeleton's view: scheduled meetings per ward.
create table reports.ward_meetings (
    meeting_id      text primary key,
    ward_id         text not null,
    cell_id         text not null,
    kind            text not null,
    scheduled_start timestamptz not null,
    agenda          jsonb not null,
    global_position bigint not null
);
create index ward_meetings_by_ward on reports.ward_meetings (ward_id, scheduled_start);
