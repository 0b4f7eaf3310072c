"""Test-only helpers for certpin: throwaway PKIs and real loopback TLS servers.

Nothing here imports ``certpin``; these helpers are the independent oracle the test suite
compares the library against.
"""
