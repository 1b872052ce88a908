"""Postgres projection store."""
