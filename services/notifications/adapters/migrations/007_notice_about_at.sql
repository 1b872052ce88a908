-- A delivery remembers the moment its notice is about: a meeting notice the start it
-- announces (what about_start held), a petition's deadline warning the deadline it warns
-- of. The dispatcher and the resend command compare it with the directory before sending
-- (docs/notifications.md, "The stale rule"). Meeting rows keep their start; deadline
-- warnings recorded before this migration have none and are checked by the petition's
-- status alone.
alter table notifications.deliveries rename column about_start to about_at;
