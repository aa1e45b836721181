"""Alerts: rules over readings, their state in the database, notifications through Apprise."""
