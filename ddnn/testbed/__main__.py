"""``python -m ddnn.testbed``: the three-host netem testbed (see ``--help``; needs root)."""

import sys

from ddnn.cli.testbed import main

sys.exit(main())
