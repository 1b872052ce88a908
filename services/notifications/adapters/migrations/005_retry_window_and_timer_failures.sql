-- Deliveries: when the first attempt was made, so that temporary failures are retried for
-- a span of time (RETRY_GIVE_UP_S), not a count of quick attempts.
alter table notifications.deliveries add column first_attempt_at timestamptz;

-- Timers: a timer that fails is retried on its own (retry_at, with backoff) and, after
-- TIMER_MAX_ATTEMPTS, set aside as 'dead' with its last error, so that it never blocks the
-- others. due_at stays as it was: the fired notice's id is derived from it.
alter table notifications.timers drop constraint timers_status_check;
alter table notifications.timers
    add constraint timers_status_check
        check (status in ('pending', 'fired', 'cancelled', 'dead')),
    add column attempts   integer not null default 0,
    add column retry_at   timestamptz,
    add column last_error text;
create index timers_dead on notifications.timers (timer_id) where status = 'dead';
