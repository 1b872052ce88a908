"""Notifications: who hears what, through which channel, exactly once, in Vietnamese."""
