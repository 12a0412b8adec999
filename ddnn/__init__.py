"""ddnn: distributed early-exit inference across edge and cloud.

The core library (models, data, policies, calibration, evaluation, codecs, control) needs no
server; the gRPC services live in ``services/`` and import it.
"""

import os

# OpenMP threads that spin while waiting steal the core another ddnn process (edge, cloud,
# Triton stub, load generator) needs; on a 2-core machine a 2-thread torch ran 5x slower with a
# second busy process. libgomp reads this when torch loads, so it is set before any import of
# torch through ddnn; an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
