"""Enforcement in TLS clients: the pinning `ssl.SSLContext` hook and fetching a verified chain."""
