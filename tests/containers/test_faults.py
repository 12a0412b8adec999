"""Faults on the compose testbed through the docker SDK, each printing its timeline (run with -s to see it).

A load generator container replays on the project's network while a test kills, pauses, disconnects or
restarts a service container; every test then checks what a user would: every sample answered at most
once and accounted for (answered, or failed with a reason), degraded answers within the edge's cloud
timeout, health NOT_SERVING where the backend is gone, and offloading back once the fault is healed.
Each test leaves the testbed healthy for the next.
"""

from __future__ import annotations

import time

from tests.containers.testbed import EDGE, Timeline, wait_until

CLOUD_TIMEOUT_S = float(EDGE["DDNN_EDGE_CLOUD_TIMEOUT_S"])
IMAGES = 2400
RATE = 4.0  # batches of 32 per second: a replay of about 20 s, long enough to hold a fault in the middle
UNDER_WAY = 300  # the fault comes once the edge has answered this many of the replay's samples
FAULT_FOR_S = 8.0


def check_accounting(report: dict, rows: list[dict], allow_failed: bool = False) -> None:
    """Every sample answered exactly once, or (allow_failed) failed with a reason; none twice, none lost."""
    integrity = report["integrity"]
    assert report["samples"] == IMAGES
    assert integrity["duplicated"] == 0 and integrity["missing"] == 0, integrity
    assert integrity["answered_exactly_once"] == IMAGES, integrity
    assert all(int(r["answers"]) == 1 for r in rows)
    failed = [r for r in rows if r["outcome"] == "rejected"]
    if allow_failed:
        assert all(r["error"] for r in failed), failed[:3]
    else:
        assert not failed and integrity["ok"], failed[:3]


def check_degraded_in_time(rows: list[dict]) -> None:
    """Samples the fault caught were answered locally, each within the edge's cloud timeout (plus slack)."""
    degraded = [float(r["server_total_s"]) for r in rows if r["outcome"] == "degraded"]
    assert degraded, "the fault should have been answered locally (degraded)"
    assert max(degraded) <= CLOUD_TIMEOUT_S + 2.0, max(degraded)


def healthy_again(testbed, timeline: Timeline, *services: str) -> None:
    for service in services:
        testbed.wait_healthy(service, timeout=300)
    timeline.mark(f"{', '.join(services)} healthy again")


def replay_after(testbed, name: str, t: Timeline, within_s: float = 180.0) -> dict:
    """Short replays once healed until one offloads with nothing degraded; fail if none does within ``within_s``.

    After a partition or a pause the edge's stream can look up while its old connection is dead: it
    finds out by keepalive or the cloud timeout, then reconnects. The user-visible claim is that
    offloading comes back, so the time it took goes on the timeline and the bound is asserted.
    """
    start = time.monotonic()
    for attempt in range(1, 100):
        report = testbed.run_loadgen(f"{name}-{attempt}", 320, 8.0).wait()
        assert report["integrity"]["ok"], report["integrity"]
        rates = report["exit_rates"]
        if rates["cloud"] > 0 and rates["degraded"] == 0:
            t.mark(f"offloading resumed (replay {attempt}, {time.monotonic() - start:.0f}s after the heal)")
            return report
        t.mark(f"replay {attempt} after the heal: cloud {rates['cloud']:.3f}, degraded {rates['degraded']:.3f}")
        assert time.monotonic() - start < within_s, f"offloading did not resume within {within_s:.0f}s: {rates}"
    raise AssertionError("unreachable")


def fault_replay(testbed, name: str, t: Timeline):
    """Start a replay and return once it is under way (the load generator first decodes the test split)."""
    before = testbed.edge_samples()
    run = testbed.run_loadgen(name, IMAGES, RATE)
    t.mark(f"replay of {IMAGES} images started ({name})")
    wait_until("the replay under way", lambda: testbed.edge_samples() - before >= UNDER_WAY, 120, interval=0.2)
    t.mark(f"replay under way: the edge answered {UNDER_WAY}+ samples")
    return run


def finish(run, t: Timeline, allow_failed: bool = False) -> list[dict]:
    report = run.wait()
    t.mark(f"replay done, exit {report['exit_code']}: integrity {report['integrity']}, "
           f"exit rates { {k: round(v, 3) for k, v in report['exit_rates'].items() if v} }")
    rows = run.rows()
    check_accounting(report, rows, allow_failed)
    return rows


def edge_serving(testbed) -> str:
    return testbed.health("edge", "127.0.0.1:50051", "ddnn.v1.Edge")


def cloud_health(testbed) -> str:
    return testbed.health("cloud", "127.0.0.1:50052", "ddnn.v1.Cloud")


def test_cloud_killed_mid_replay_and_started_again(testbed):
    t = Timeline("kill cloud")
    run = fault_replay(testbed, "lg-kill-cloud", t)
    cloud = testbed.container("cloud")
    cloud.kill()
    t.mark("cloud killed (SIGKILL)")
    assert edge_serving(testbed) == "SERVING", "the edge still answers, locally"
    time.sleep(FAULT_FOR_S)
    cloud.start()
    t.mark("cloud started again")
    rows = finish(run, t)
    check_degraded_in_time(rows)
    healthy_again(testbed, t, "cloud")
    replay_after(testbed, "lg-kill-cloud-after", t)


def test_triton_killed_the_cloud_says_not_serving_until_it_is_back(testbed):
    t = Timeline("kill triton")
    run = fault_replay(testbed, "lg-kill-triton", t)
    triton = testbed.container("triton")
    triton.kill()
    t.mark("triton killed (SIGKILL)")
    wait_until("the cloud to report NOT_SERVING", lambda: cloud_health(testbed) == "NOT_SERVING", 60)
    t.mark("cloud health: NOT_SERVING")
    assert edge_serving(testbed) == "SERVING"
    rows = finish(run, t)
    check_degraded_in_time(rows)
    triton.start()
    t.mark("triton started again (exports and loads its models)")
    healthy_again(testbed, t, "triton")
    wait_until("the cloud to report SERVING", lambda: cloud_health(testbed) == "SERVING", 120)
    t.mark("cloud health: SERVING")
    replay_after(testbed, "lg-kill-triton-after", t)


# This test found a service bug: after the heal the edge's cloud link came back while the cloud still said
# NOT_SERVING (its own Triton connection broke with the partition, when the edge, the cloud and Triton shared
# one network); the cloud turned SERVING a few seconds later, but the edge's health Watch never delivered it
# (3 of 5 runs), so every offload was answered degraded until the edge restarted. The edge now reopens an
# ended Watch and, while the cloud looks NOT_SERVING, asks it directly (services/edge/cloud_link.py
# _watch_health). The partition now cuts the backhaul only (the edge<->cloud network), as a WAN outage would.
def test_cloud_partitioned_from_the_edge_and_healed(testbed):
    t = Timeline("partition")
    network = testbed.client.networks.get(testbed.backhaul)
    run = fault_replay(testbed, "lg-partition", t)
    cloud = testbed.container("cloud")
    network.disconnect(cloud)
    t.mark(f"cloud disconnected from {testbed.backhaul} (Triton and Prometheus still reach it)")
    try:
        assert edge_serving(testbed) == "SERVING"
        time.sleep(FAULT_FOR_S)
    finally:
        network.connect(cloud, aliases=["cloud-backhaul"])
        t.mark("cloud connected again (alias 'cloud-backhaul')")
    rows = finish(run, t)
    check_degraded_in_time(rows)
    healthy_again(testbed, t, "cloud")
    try:
        replay_after(testbed, "lg-partition-after", t, within_s=120)
    except AssertionError:
        # Leave the testbed as the next test needs it: a fresh edge offloads again.
        testbed.container("edge").restart(timeout=20)
        healthy_again(testbed, t, "edge")
        t.mark("edge restarted so the next test starts clean")
        raise


def test_cloud_paused_is_a_hung_peer(testbed):
    t = Timeline("pause cloud")
    run = fault_replay(testbed, "lg-pause", t)
    cloud = testbed.container("cloud")
    cloud.pause()
    t.mark("cloud paused (SIGSTOP to every process: a hung peer)")
    assert edge_serving(testbed) == "SERVING"
    time.sleep(FAULT_FOR_S)
    cloud.unpause()
    t.mark("cloud unpaused")
    rows = finish(run, t)
    check_degraded_in_time(rows)
    healthy_again(testbed, t, "cloud")
    replay_after(testbed, "lg-pause-after", t)


def test_edge_restarted_mid_replay_the_load_generator_reconnects(testbed):
    t = Timeline("restart edge")
    run = fault_replay(testbed, "lg-restart-edge", t)
    testbed.container("edge").restart(timeout=20)
    t.mark("edge restarted (SIGTERM: drain, exit; then started)")
    rows = finish(run, t, allow_failed=True)
    failed = [i for i, r in enumerate(rows) if r["outcome"] == "rejected"]
    t.mark(f"{len(failed)} samples failed with a reason, {len(rows) - len(failed)} answered")
    assert all("stream to the edge lost" in rows[i]["error"] for i in failed), [rows[i] for i in failed[:3]]
    assert "reconnecting" in run.container.logs().decode(errors="replace"), "the load generator never reconnected"
    assert {r["outcome"] for r in rows[-320:]} & {"edge", "cloud"}, "nothing answered after the restart"
    healthy_again(testbed, t, "edge")
    replay_after(testbed, "lg-restart-edge-after", t)
