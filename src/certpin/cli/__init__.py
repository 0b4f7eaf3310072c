"""The ``certpin`` command line: one thin verb per library feature (docs/cli.md).

- `certpin.cli.main`: the verb group and `main` (exit codes, warnings, lazy verb imports).
- `certpin.cli.options`: the options the verbs share (``--json``, ``--policy``, ``--cafile``,
  ``--connect``, ``-o/--output``, ``--timeout``…), the `Verb` command class and the deprecated
  spellings.
- `certpin.cli.exitcode`: `ExitCode`, the one table of exit codes.
- `certpin.cli.sources`: the chain and spare-key options of ``lint``, ``inventory`` and
  ``rotate next``.
- `certpin.cli.output`, `certpin.cli.messages`: how verbs write, and the verifier's words in
  plain language.
- One module per verb group: `pins` (``pin``, ``check``), `lifecycle` (``keygen``, ``lint``,
  ``inventory``), `rotate`, `monitor`, `formats` (``export``, ``import``), `bundle`, `tofu`,
  `serve`.
"""
