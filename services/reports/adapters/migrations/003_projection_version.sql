-- Which version of the projection code built the tables. When the code's version differs
-- (new projections, or new rules in old ones), the service rebuilds them from the events
-- topic before it consumes, so an upgrade never serves half-built figures.
create table reports.projection_version (
    version    integer not null,
    rebuilt_at timestamptz not null default now()
);
