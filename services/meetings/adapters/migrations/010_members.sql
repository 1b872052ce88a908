-- Each member's current cell and ward, kept by the write side with the cells' events
-- (MemberAdmitted, MemberTransferredOut; adapters/write_models.py). A person's contact
-- details are the business of the ward the person belongs to now: the ward they moved to,
-- not the one that first recorded them (domain/contact.py).
create table meetings.members (
    member_id text primary key,
    cell_id   text not null,
    ward_id   text not null
);

-- From the events already stored: each member's latest admission to a cell they have not
-- been transferred out of since.
with admitted as (
    select payload ->> 'member_id' as member_id, payload ->> 'cell_id' as cell_id,
           payload ->> 'ward_id' as ward_id, global_position
    from meetings.events where event_type = 'MemberAdmitted'
), left_cell as (
    select payload ->> 'member_id' as member_id, payload ->> 'cell_id' as cell_id,
           max(global_position) as global_position
    from meetings.events where event_type = 'MemberTransferredOut'
    group by 1, 2
)
insert into meetings.members (member_id, cell_id, ward_id)
select distinct on (a.member_id) a.member_id, a.cell_id, a.ward_id
from admitted a
left join left_cell l
  on l.member_id = a.member_id and l.cell_id = a.cell_id
 and l.global_position > a.global_position
where l.member_id is null
order by a.member_id, a.global_position desc;

-- A member's contact row follows them to their ward (it kept the first recorder's).
update meetings.contacts c set ward_id = m.ward_id, updated_at = now()
from meetings.members m
where m.member_id = c.person_id and c.ward_id <> m.ward_id;
