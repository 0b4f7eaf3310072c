"""The pure core: host names, pins, policies, their schema, the verdict, certificate
sources and dates. No sockets, ssl, threads, files or clock reads; imports nothing outside
``certpin.core`` and ``certpin._errors``."""
