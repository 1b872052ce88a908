-- The names the organisation's events carry (CellRegistered.name, UnitRegistered.name),
-- so notices say "Chi bộ thôn Đình Hương" and "Đảng ủy xã Thiệu Vân", not ids. Rows
-- written before this migration have none: their notices show the id until the cell or
-- unit is registered again.
alter table notifications.cells add column name text;
alter table notifications.units add column name text;
