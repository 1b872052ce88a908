"""Pure report logic: no I/O."""
