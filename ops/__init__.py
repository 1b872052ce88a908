"""Operator tooling: the local stack without Docker and the `chibo` CLI."""
