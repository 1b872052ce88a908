"""The read side: projections of the event history into per-ward reports."""
