"""`python -m miscause` runs the console script."""

import sys

from miscause.cli import main

sys.exit(main())
