-- Write-side read models, kept in the same transaction as the events they follow.

-- Open petitions' current deadlines: what the deadline scheduler scans (by due_at only,
-- so a scan costs what is due, not what is open). A claim is a short lease, so that a
-- replica that dies holding one only delays it.
create table meetings.petition_deadlines (
    petition_id   text primary key,
    ward_id       text not null,
    due_at        timestamptz not null,
    claimed_until timestamptz
);
create index petition_deadlines_due on meetings.petition_deadlines (due_at);

-- Petitions by ward, category and place, to flag recurring ones.
create table meetings.petition_index (
    petition_id text primary key,
    ward_id     text not null,
    category    text not null,
    place_key   text not null,
    raised_at   timestamptz not null
);
create index petition_index_similar on meetings.petition_index (ward_id, category, place_key, raised_at);
