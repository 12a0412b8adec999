from ddnn.control.modes import LinkState, ModeSelector, ModeThresholds

GOOD = LinkState(True, 0.002, 50e6, 0.0)
WAN = LinkState(True, 0.080, 1.2e6, 0.0)
LOSSY = LinkState(True, 0.030, 1e6, 0.7)
DOWN = LinkState(False, 0.0, 0.0, 1.0)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def feed(sel, clock, state, seconds, step=0.5):
    modes = []
    for _ in range(int(seconds / step)):
        clock.t += step
        modes.append(sel.update(state))
    return modes


def test_good_link_goes_ws_after_the_dwell_time_only():
    clock = Clock()
    sel = ModeSelector(ModeThresholds(dwell_s=2.0), clock=clock)
    modes = feed(sel, clock, GOOD, 3.0)
    assert modes[:3] == ["normal"] * 3 and modes[-1] == "ws" and sel.switches == 1


def test_constrained_link_means_normal_and_disconnect_is_local_at_once():
    clock = Clock()
    sel = ModeSelector(clock=clock, initial="ws")
    assert feed(sel, clock, WAN, 3.0)[-1] == "normal"
    clock.t += 0.1
    assert sel.update(DOWN) == "local"  # no dwell for a lost connection
    assert feed(sel, clock, LOSSY, 3.0)[-1] == "local"  # still losing most requests
    assert feed(sel, clock, GOOD, 5.0)[-1] == "ws"


def test_hysteresis_band_prevents_flapping():
    clock = Clock()
    sel = ModeSelector(ModeThresholds(ws_enter_rtt_s=0.010, ws_leave_rtt_s=0.020, dwell_s=1.0), clock=clock)
    feed(sel, clock, GOOD, 2.0)
    assert sel.mode == "ws"
    # An RTT between the enter and leave thresholds keeps ws, and would not have entered it.
    middling = LinkState(True, 0.015, 50e6, 0.0)
    assert feed(sel, clock, middling, 5.0)[-1] == "ws"
    fresh = ModeSelector(ModeThresholds(ws_enter_rtt_s=0.010, ws_leave_rtt_s=0.020, dwell_s=1.0), clock=clock)
    assert feed(fresh, clock, middling, 5.0)[-1] == "normal"
    # Alternating good/bad faster than the dwell time never switches.
    switches = sel.switches
    for _ in range(10):
        feed(sel, clock, WAN, 0.5)
        feed(sel, clock, GOOD, 0.5)
    assert sel.switches == switches


def test_saturated_link_is_not_good():
    clock = Clock()
    sel = ModeSelector(ModeThresholds(max_inflight_batches=4, dwell_s=0.5), clock=clock)
    busy = LinkState(True, 0.002, 50e6, 0.0, inflight_batches=10)
    assert feed(sel, clock, busy, 2.0)[-1] == "normal"
