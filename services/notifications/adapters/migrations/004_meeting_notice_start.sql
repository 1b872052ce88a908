-- A meeting notice remembers the start it announces, so a notice still waiting (quiet
-- hours, a retry, a resend) can be withdrawn once the meeting has moved, been called off
-- or begun (docs/notifications.md, "The stale rule"). Null for other triggers.
alter table notifications.deliveries add column about_start timestamptz;
-- The waiting notices about one meeting, withdrawn when it is moved or called off.
create index deliveries_pending_ref on notifications.deliveries (trigger_ref)
    where status = 'pending';
