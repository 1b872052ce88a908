-- The erasable contact store: personal data (phone, e-mail) kept out of the immutable
-- log. Erasure deletes the row; the log keeps only that details changed or were erased.
create table meetings.contacts (
    person_id  text primary key,
    ward_id    text not null,
    phone      text,
    email      text,
    updated_at timestamptz not null default now()
);
