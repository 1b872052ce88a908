"""Projection handlers and report queries."""
