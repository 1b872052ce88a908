-- The organisation tree (unit -> parent), for scoping tokens above the ward.
create table meetings.org_units (
    unit_id   text primary key,
    parent_id text references meetings.org_units (unit_id),
    level     text not null,
    name      text not null
);
create index org_units_parent on meetings.org_units (parent_id);
