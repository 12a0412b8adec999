"""``python -m ddnn.testbed``: the three-host netem testbed (see ``--help``; needs root)."""

import signal
import sys

from ddnn.cli.testbed import main

# A shell starts background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt:
# Ctrl-C (or a supervisor's SIGINT) must still unwind the testbed and delete its namespaces.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

sys.exit(main())
