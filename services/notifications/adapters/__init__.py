"""Delivery log in Postgres, templates, SMTP, recipient directory."""
