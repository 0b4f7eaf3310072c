"""``python tests/ct/_cli.py ARGS``: ``certpin ARGS`` in a subprocess, with ``ct`` registered
(for the kill -9 tests and certspotter's hooks.d script, until the lead adds ``ct`` to the
verbs; then it is the same as ``python -m certpin``)."""

import sys

from certpin.cli import main as cli_main

verbs = getattr(cli_main, "_VERBS", None)
if verbs is not None:
    verbs.setdefault("ct", "certpin.cli.ct:ct_group")
sys.exit(cli_main.main(sys.argv[1:]))
