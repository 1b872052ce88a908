-- The recipient directory: notifications' own projection of the organisation's events.
-- Only ids and roles: contact details stay in the meetings service's erasable store.
create table notifications.cells (
    cell_id     text primary key,
    ward_id     text not null,
    meeting_day integer not null
);
create table notifications.cell_members (
    cell_id   text not null,
    person_id text not null,
    primary key (cell_id, person_id)
);
-- One holder per office: an appointment replaces the previous holder.
create table notifications.cell_officials (
    cell_id   text not null,
    role      text not null,
    person_id text not null,
    primary key (cell_id, role)
);
create table notifications.units (
    unit_id   text primary key,
    parent_id text,
    level     text not null
);
create table notifications.unit_officials (
    unit_id   text not null,
    role      text not null,
    person_id text not null,
    primary key (unit_id, role)
);
-- What the timers and the monthly checks need to know about meetings and petitions.
create table notifications.meetings (
    meeting_id      text primary key,
    ward_id         text not null,
    cell_id         text not null,
    kind            text not null,
    scheduled_start timestamptz not null,
    status          text not null default 'scheduled',
    payload         jsonb not null
);
create table notifications.regular_meetings_held (
    cell_id text not null,
    month   text not null,
    primary key (cell_id, month)
);
create table notifications.petitions (
    petition_id text primary key,
    ward_id     text not null,
    cell_id     text not null,
    level       text not null,
    holder_id   text,
    deadline_at timestamptz not null,
    status      text not null default 'open',
    history     jsonb not null default '[]'
);
create table notifications.ward_reports (
    ward_id      text not null,
    month        text not null,
    submitted_at timestamptz not null,
    primary key (ward_id, month)
);

-- Each person's channels; people without a row get NOTIFY_DEFAULT_CHANNELS.
create table notifications.preferences (
    person_id  text primary key,
    channels   text[] not null,
    updated_by text not null,
    updated_at timestamptz not null default now()
);

-- Durable timers: reminders, deadline warnings and the monthly checks. Written in the
-- consumer's transaction; the scheduler fires due rows into deliveries in one transaction
-- each, so a timer fires exactly once and survives restarts.
create table notifications.timers (
    timer_id   bigint generated always as identity primary key,
    kind       text not null,   -- meeting_reminder, petition_deadline, meeting_missing, report_late
    ref_id     text not null,   -- the meeting, petition, cell or ward it is about
    due_at     timestamptz not null,
    payload    jsonb not null,
    status     text not null default 'pending'
               check (status in ('pending', 'fired', 'cancelled')),
    created_at timestamptz not null default now(),
    fired_at   timestamptz,
    unique (kind, ref_id, due_at)
);
create index timers_due on notifications.timers (due_at) where status = 'pending';
create index timers_ref on notifications.timers (ref_id, kind) where status = 'pending';

-- Deliveries: the recipient is a person id (contacts are looked up at send time), with a
-- priority, the reason it was suppressed or dead-lettered, and the 'sending' claim that
-- bounds the duplicate window at the SMTP boundary (docs/notifications.md).
alter table notifications.deliveries drop constraint deliveries_status_check;
update notifications.deliveries set status = 'dead' where status = 'failed';
alter table notifications.deliveries
    add constraint deliveries_status_check
        check (status in ('pending', 'sending', 'sent', 'dead', 'suppressed')),
    add column priority      text not null default 'normal',
    add column reason        text,
    add column claimed_until timestamptz,
    add column trigger_ref   text;
create index deliveries_sending on notifications.deliveries (claimed_until)
    where status = 'sending';
create index deliveries_dead on notifications.deliveries (delivery_id) where status = 'dead';
