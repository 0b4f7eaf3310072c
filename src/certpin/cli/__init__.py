"""The ``certpin`` command line: one module per verb group over the library."""
