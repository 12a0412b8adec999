"""``python -m tests.containers.engine``: exit 0 when the container suite can run, else print why and exit 1.

`make test` runs tests/containers only when this says an engine answers; otherwise the one line it
prints is the whole output of the skipped suite (a laptop without Docker still passes `make test`).
"""

from __future__ import annotations

import sys

from tests.containers.testbed import engine_problem


def main() -> int:
    problem = engine_problem()
    if problem:
        print(f"container suite (tests/containers) skipped: {problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
