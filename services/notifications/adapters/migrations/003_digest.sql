-- The daily digest: low-priority notices wait as 'digest' until the digest time, then are
-- folded ('digested') into one delivery per (recipient, channel).
alter table notifications.deliveries drop constraint deliveries_status_check;
alter table notifications.deliveries
    add constraint deliveries_status_check
        check (status in ('pending', 'sending', 'sent', 'dead', 'suppressed', 'digest',
                          'digested'));
create index deliveries_digest on notifications.deliveries (next_attempt_at)
    where status = 'digest';
