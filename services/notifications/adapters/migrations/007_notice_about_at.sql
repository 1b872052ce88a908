-- A delivery remembers the moment its notice is about: a meeting notice the start it
-- announces (what about_start held), a petition's deadline warning the deadline it warns
-- of. The dispatcher and the resend command compare it with the directory before sending
-- (docs/notifications.md, "The stale rule"). Deadline warnings recorded before this
-- migration have none and are checked by the petition's status alone.
--
-- Added beside about_start, not renamed from it: in a rolling update the previous release
-- still records and reads about_start (docs/scaling.md, "Migrations"). This release writes
-- both and reads coalesce(about_at, about_start); about_start goes in a later release.
alter table notifications.deliveries add column about_at timestamptz;
update notifications.deliveries set about_at = about_start where about_start is not null;
