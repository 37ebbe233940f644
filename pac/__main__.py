"""`python -m pac`: the same as the `pac-eval` command."""

import sys

from pac.cli import main

sys.exit(main())
