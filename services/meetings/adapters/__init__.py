"""Adapters to the outside: Postgres event store, Kafka relay, metrics."""
