"""Pure model of the write side: aggregates decide; they do no I/O."""
