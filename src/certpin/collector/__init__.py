"""The pin-failure report collector (`certpin serve`): see docs/collector.md.

Imports starlette, uvicorn and SQLAlchemy: install the ``collector`` extra.
"""
