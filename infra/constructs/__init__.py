"""Constructs, each paired with the runtime piece it hosts (functions, GPU service, batch events, alarms)."""
