-- Units may arrive in any order (a child's command is keyed by its parent and can be read
-- from another partition before the parent's): no foreign key on the parent. A chain
-- simply stops at a parent not registered yet.
alter table meetings.org_units drop constraint if exists org_units_parent_id_fkey;
