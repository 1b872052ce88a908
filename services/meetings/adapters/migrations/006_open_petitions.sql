-- petition_deadlines becomes the table of open petitions: the level that holds each, and
-- its deadline (none once it is overdue at the top of the ladder: still open, nothing
-- left to schedule).
alter table meetings.petition_deadlines add column level text;
alter table meetings.petition_deadlines alter column due_at drop not null;
