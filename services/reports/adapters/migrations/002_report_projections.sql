-- The monthly report's projections: facts kept from events, summed when a report is read.
-- Every table here is rebuilt from the events topic by `chibo reports rebuild`.
-- Times are the source's (the envelope's occurred_at), so late history lands in its month.

create table reports.units (
    unit_id   text primary key,
    level     text not null,
    name      text not null,
    parent_id text
);

create table reports.cells (
    cell_id     text primary key,
    ward_id     text not null,
    name        text not null,
    meeting_day integer not null,
    roll_calls  integer not null
);
create index cells_by_ward on reports.cells (ward_id);

-- One stay on a cell's roll; a member moved out and back has two.
create table reports.memberships (
    cell_id          text not null,
    member_id        text not null,
    admitted_version integer not null,  -- the cell stream's version: orders stays
    ward_id          text not null,
    probationary     boolean not null,
    admitted_at      timestamptz not null,
    left_at          timestamptz,
    primary key (cell_id, member_id, admitted_version)
);
create index memberships_by_ward on reports.memberships (ward_id);

create table reports.exemptions (
    cell_id      text not null,
    member_id    text not null,
    exempt_from  date not null,
    ward_id      text not null,
    exempt_until date,
    primary key (cell_id, member_id, exempt_from)
);
create index exemptions_by_ward on reports.exemptions (ward_id);

create table reports.meetings (
    meeting_id            text primary key,
    ward_id               text not null,
    cell_id               text not null,
    kind                  text not null,
    agenda                jsonb not null,
    first_scheduled_start timestamptz not null,
    scheduled_start       timestamptz not null,
    reschedules           integer not null default 0,
    cancelled_reason      text,
    opened_at             timestamptz,
    closed_at             timestamptz,
    supervisor_present    boolean,
    first_present_ids     text[],        -- to count who was there at both roll calls
    present_first         integer not null default 0,
    absent_excused        integer not null default 0,
    absent_unexcused      integer not null default 0,
    present_second        integer,
    present_both          integer,
    speakers              integer,
    minutes_recorded      boolean,
    previous_resolution_carried_out boolean
);
create index meetings_by_ward_month on reports.meetings (ward_id, first_scheduled_start);

create table reports.resolutions (
    resolution_id text primary key,
    meeting_id    text not null,
    ward_id       text not null,
    cell_id       text not null,
    title         text not null,
    adopted_at    timestamptz not null
);
create index resolutions_by_ward on reports.resolutions (ward_id);

create table reports.tasks (
    resolution_id text not null,
    task_id       text not null,
    ward_id       text not null,
    due_on        date not null,
    completed_on  date,
    primary key (resolution_id, task_id)
);
create index tasks_by_ward on reports.tasks (ward_id);

create table reports.petitions (
    petition_id text primary key,
    ward_id     text not null,
    cell_id     text not null,
    category    text not null,
    place       text not null,
    raised_at   timestamptz not null,
    level       text not null,
    holder_id   text not null,
    deadline_at timestamptz not null,
    recurring   boolean not null
);
create index petitions_by_ward on reports.petitions (ward_id, raised_at);

-- What happened to a petition after it was raised, in its stream's order.
create table reports.petition_steps (
    petition_id  text not null,
    version      integer not null,
    ward_id      text not null,
    at           timestamptz not null,
    kind         text not null,
    level        text,
    to_level     text,
    to_holder_id text,
    reason       text,
    deadline_at  timestamptz,
    primary key (petition_id, version)
);
create index petition_steps_by_ward on reports.petition_steps (ward_id);

create table reports.submissions (
    ward_id      text not null,
    month        text not null,
    submitted_at timestamptz not null,
    due_at       timestamptz not null,
    on_time      boolean not null,
    submitted_by text not null,
    primary key (ward_id, month)
);

create table reports.orientations (
    orientation_id text primary key,
    ward_id        text not null,
    month          text not null,
    topics         jsonb not null,
    issued_at      timestamptz not null,
    on_time        boolean not null
);

-- The walking skeleton's table: its reads now come from reports.meetings.
drop table reports.ward_meetings;
