"""Endpoint monitoring: concurrent checks and the drift state."""
