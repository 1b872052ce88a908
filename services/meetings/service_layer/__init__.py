"""Use cases: command handlers over the event store."""
