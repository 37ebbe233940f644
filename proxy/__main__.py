"""`python -m proxy`: the same as the `airgap-proxy` command."""

import sys

from proxy.cli import main

sys.exit(main())
