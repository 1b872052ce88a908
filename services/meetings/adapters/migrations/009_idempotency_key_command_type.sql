-- An idempotency key remembers the type of the command it was first used for, so that the
-- key sent again with another command (another type, or another stream, which the row
-- already keeps) is refused instead of answered with the first command's result
-- (service_layer/handlers.py). Rows written before keep null and are checked by stream only.
alter table meetings.idempotency_keys add column command_type text;
