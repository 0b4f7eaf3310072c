"""``python -m certpin``: the same as the ``certpin`` command."""

import sys

from certpin.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
