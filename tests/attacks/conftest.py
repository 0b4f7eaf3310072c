"""Register the shared end-to-end fixtures (tests/tls/_fixtures.py)."""

from tls._fixtures import *  # noqa: F403
