"""Last in the session (files run in name order): stopping the testbed drains it and every service exits 0.

``docker compose down`` is ``stop`` (SIGTERM, the grace period, then SIGKILL) and then removal; the
session fixture removes, this test stops and reads every container's exit code in between.
"""

from __future__ import annotations


def test_compose_stop_drains_and_every_service_exits_0(testbed):
    codes = testbed.stop_all(timeout=60)
    print(f"\nexit codes after docker compose stop: {codes}")
    assert set(codes) == set(testbed.services()), codes
    assert all(code == 0 for code in codes.values()), codes
    for service in ("cloud", "edge"):
        # Graceful: health went NOT_SERVING and in-flight work drained before the process exited.
        assert "draining in-flight calls" in testbed.logs(service, tail=40), testbed.logs(service, tail=20)
