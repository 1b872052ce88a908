"""Turning events into deliveries, and dispatching them."""
