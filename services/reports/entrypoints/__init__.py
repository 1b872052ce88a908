"""HTTP read API and the Kafka subscriber."""
