"""``python -m expgrid``: the same as the ``expgrid`` console script."""

import sys

from expgrid.cli import main

sys.exit(main())
