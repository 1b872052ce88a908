"""Doors into the service: HTTP now, the Kafka inbound topic next."""
