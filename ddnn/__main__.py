"""``python -m ddnn`` is the ``ddnn`` command."""

import sys

from ddnn.cli import main

sys.exit(main())
