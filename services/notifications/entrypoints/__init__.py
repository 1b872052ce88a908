"""The Kafka subscriber and the HTTP operational routes."""
