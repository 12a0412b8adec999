"""Exit criteria: hand-computed decisions, JSON round trips, monotone knobs, EdgePolicy.decide."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ddnn.errors import PolicyError
from ddnn.policies import (
    AoMarginCriterion,
    Decision,
    DropRule,
    EdgePolicy,
    EntropyCriterion,
    ExitCriterion,
    MaxSoftmaxCriterion,
    NormalizedEntropyCriterion,
    fit_ao_margin,
    softmax,
    top2,
)


def logits_of(probs) -> np.ndarray:
    """Logits whose softmax is ``probs`` (rows with zeros get a very negative logit)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(p > 0, np.log(p), -1e4)


def synthetic_probs(n: int, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs of a noisy classifier and their labels: confident outputs are usually right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(0, 1.0, (n, classes))
    logits[np.arange(n), labels] += rng.gamma(2.0, 1.2, n)
    return softmax(logits), labels


# --- hand-computed cases ------------------------------------------------------------------------

def test_max_softmax_exits_strictly_above_threshold():
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.4, 0.35, 0.25]])
    crit = MaxSoftmaxCriterion(0.5)
    assert crit.accept(probs).tolist() == [True, False, False]  # 0.5 is not > 0.5 (Eq. 2)
    assert crit.confidence(probs).tolist() == [0.7, 0.5, 0.4]
    assert crit.with_knob(0.39).accept(probs).all()
    assert not crit.with_knob(1.0).accept(probs).any()


def test_entropy_exits_below_threshold_in_nats():
    probs = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    crit = EntropyCriterion(0.7)  # entropies: ln 2 = 0.693, ln 4 = 1.386, 0
    assert crit.accept(probs).tolist() == [True, False, True]
    assert crit.with_knob(math.log(2)).accept(probs).tolist() == [False, False, True]
    assert np.allclose(crit.confidence(probs), [0.5, 0.0, 1.0])  # 1 - normalized entropy


def test_normalized_entropy_divides_by_log_classes():
    probs = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    crit = NormalizedEntropyCriterion(0.5)  # normalized entropies: exactly 0.5 and 1.0
    assert crit.accept(probs).tolist() == [False, False]
    assert crit.with_knob(0.51).accept(probs).tolist() == [True, False]
    with pytest.raises(PolicyError, match=r"normalized_entropy threshold must be in \[0, 1\]"):
        crit.with_knob(1.5)


def hand_ao(ratio: float = 1.0) -> AoMarginCriterion:
    """3 classes, grid 0, 0.5, 1: pooled odds rising -1 -> 1; pair (0,1) always sure; class 1 never
    right; class 2 never wrong."""
    groups = {
        "*": {"n_correct": 5, "n_incorrect": 5, "log_odds": [-1.0, 0.0, 1.0]},
        "0,1": {"n_correct": 50, "n_incorrect": 2, "log_odds": [2.0, 2.0, 2.0]},
        "1": {"n_correct": 0, "n_incorrect": 7, "log_odds": None},
        "2": {"n_correct": 9, "n_incorrect": 0, "log_odds": None},
    }
    return AoMarginCriterion(3, groups, ratio=ratio, grid_points=3)


def test_ao_thresholds_are_where_the_odds_reach_the_knob():
    crit = hand_ao()
    t = crit.thresholds()
    assert t["*"] == pytest.approx(0.5)  # log odds cross 0 at margin 0.5
    assert t["0,1"] == 0.0 and t["2"] == 0.0 and t["1"] == math.inf
    assert crit.with_knob(math.exp(0.5)).thresholds()["*"] == pytest.approx(0.75)
    assert crit.with_knob(math.exp(2.5)).thresholds()["0,1"] == math.inf
    m = crit.threshold_matrix()
    assert m[0, 1] == 0.0 and m[0, 2] == pytest.approx(0.5)  # class 0 has no group: pooled threshold


def test_ao_accepts_by_pair_then_class_then_pooled():
    probs = np.array([
        [0.6, 0.3, 0.1],  # pair (0,1): T 0 -> exit
        [0.6, 0.1, 0.3],  # (0,2): class 0 unfitted -> pooled T 0.5, margin 0.3 -> stay
        [0.1, 0.8, 0.1],  # class 1 never right -> stay, however large the margin
        [0.2, 0.3, 0.5],  # class 2 never wrong -> exit at margin 0.2
        [0.9, 0.05, 0.05],  # (0,1) margin 0.85 -> exit
    ])
    crit = hand_ao()
    assert crit.accept(probs).tolist() == [True, False, False, True, True]
    assert np.allclose(crit.confidence(probs), [0.3, 0.3, 0.7, 0.2, 0.85])
    assert crit.with_knob(0.0).accept(probs).all()  # knob 0: odds >= 0 everywhere


def test_top2_breaks_ties_like_argmax():
    a, b, m = top2(np.array([[0.4, 0.4, 0.2], [0.2, 0.3, 0.5]]))
    assert a.tolist() == [0, 2] and b.tolist() == [1, 1] and np.allclose(m, [0.0, 0.2])


# --- KDE threshold selection ---------------------------------------------------------------------

def gaussian_sample(mean: float, sd: float, n: int) -> np.ndarray:
    """n deterministic draws (quantiles) of N(mean, sd)."""
    from scipy.stats import norm

    return norm.ppf((np.arange(n) + 0.5) / n, mean, sd)


def margins_to_probs(margins: np.ndarray, classes: int = 3) -> np.ndarray:
    """Softmax outputs with top-1 class 0, top-2 class 1 and the given top1 - top2 margins."""
    rest = 0.02
    top2_p = (1.0 - rest - margins) / 2
    return np.stack([top2_p + margins, top2_p, np.full_like(margins, rest)], axis=1)


@pytest.mark.parametrize(("n_correct", "n_incorrect", "ratio"), [(4000, 4000, 1.0), (6000, 2000, 1.0),
                                                                  (4000, 4000, 2.0)])
def test_kde_threshold_is_the_crossing_of_two_gaussians(n_correct, n_incorrect, ratio):
    # Correct margins ~ N(0.6, 0.08), incorrect ~ N(0.3, 0.08). Gaussian KDE with bandwidth h turns
    # each into N(mu, s^2), s^2 = 0.08^2 + h^2, and n_c N(0.6) = r n_i N(0.3) at
    # m = 0.45 + s^2 log(r n_i / n_c) / 0.3.
    sd, h = 0.08, 0.05
    good, bad = gaussian_sample(0.6, sd, n_correct), gaussian_sample(0.3, sd, n_incorrect)
    margins = np.concatenate([good, bad])
    labels = np.concatenate([np.zeros(n_correct, int), np.ones(n_incorrect, int)])  # top-1 is class 0
    crit = fit_ao_margin(margins_to_probs(margins), labels, bandwidth=h, ratio=ratio, grid_points=201)
    s2 = sd**2 + h**2
    expected = 0.45 + s2 * math.log(ratio * n_incorrect / n_correct) / 0.3
    assert crit.thresholds()["0"] == pytest.approx(expected, abs=0.004)
    assert crit.thresholds()["0,1"] == pytest.approx(expected, abs=0.004)


def test_kde_ignores_a_window_below_a_later_crossing():
    # A cluster of confident mistakes at 0.9 above correct answers at 0.5: the odds dip below 1
    # around 0.9, so T must sit above that dip, not at the first crossing near 0.3.
    good = np.concatenate([gaussian_sample(0.5, 0.05, 300), gaussian_sample(0.99, 0.005, 50)])
    bad = np.concatenate([gaussian_sample(0.1, 0.05, 300), gaussian_sample(0.9, 0.01, 60)])
    labels = np.concatenate([np.zeros(len(good), int), np.ones(len(bad), int)])
    crit = fit_ao_margin(margins_to_probs(np.concatenate([good, bad])), labels, pairwise=False, grid_points=101)
    assert 0.9 < crit.thresholds()["0"] < 0.99


def test_fit_falls_back_from_pairs_to_classes_to_pooled():
    rng = np.random.default_rng(1)
    m = rng.uniform(0, 1, 200)
    probs = margins_to_probs(m)
    labels = np.where(m > 0.4, 0, 1)  # errors at low margins, all with pair (0, 1)
    probs[:30] = probs[:30][:, [0, 2, 1]]  # 30 samples with pair (0, 2): too few for its own threshold
    crit = fit_ao_margin(probs, labels, min_pair_samples=40)
    assert set(crit.groups) == {"*", "0", "0,1"}
    t = crit.threshold_matrix()
    assert t[0, 2] == crit.thresholds()["0"] and t[0, 1] == crit.thresholds()["0,1"]
    assert t[1, 0] == crit.thresholds()["*"]  # class 1 never predicted: pooled threshold
    # A pair without a single validation error keeps the class threshold.
    assert "0,1" not in fit_ao_margin(probs, np.zeros(200, int), min_pair_samples=40).groups


def test_ao_knob_is_recomputed_without_validation_data():
    probs, labels = synthetic_probs(3000)
    fitted = fit_ao_margin(probs, labels)
    restored = ExitCriterion.from_dict(json.loads(json.dumps(fitted.to_dict())))
    for r in (0.5, 1.0, 3.0):
        direct = fit_ao_margin(probs, labels, ratio=r)
        assert np.array_equal(restored.with_knob(r).accept(probs), direct.accept(probs))


def test_ao_json_stays_small_for_ten_classes(tmp_path):
    probs, labels = synthetic_probs(5000, classes=10, seed=3)
    crit = fit_ao_margin(probs, labels)
    assert sum("," in k for k in crit.groups) >= 80  # nearly every pair gets its own threshold: the worst case
    assert EdgePolicy({"block7": crit}).save(tmp_path / "p.json").stat().st_size < 80_000


# --- JSON round trips and validation ---------------------------------------------------------------

def all_kinds() -> dict[str, ExitCriterion]:
    probs, labels = synthetic_probs(800)
    return {"a": MaxSoftmaxCriterion(0.8), "b": EntropyCriterion(0.4), "c": NormalizedEntropyCriterion(0.3),
            "d": fit_ao_margin(probs, labels, min_pair_samples=30, ratio=1.5)}


def test_every_kind_round_trips_through_policy_json(tmp_path):
    policy = EdgePolicy(all_kinds(), DropRule(0.9), {"method": "test"})
    loaded = EdgePolicy.load(policy.save(tmp_path / "p.json"))
    assert loaded.to_dict() == policy.to_dict()
    assert {e: c.kind for e, c in loaded.criteria.items()} == {"a": "max_softmax", "b": "entropy",
                                                               "c": "normalized_entropy", "d": "ao_margin"}
    logits = np.random.default_rng(0).normal(0, 2, (300, 4))
    for exit in policy.criteria:
        for last in (False, True):
            want, got = policy.decide(exit, logits, last), loaded.decide(exit, logits, last)
            assert np.array_equal(want.decision, got.decision) and np.array_equal(want.confidence, got.confidence)


@pytest.mark.parametrize(("doc", "message"), [
    ({"kind": "max_softmax"}, "needs field 'threshold'"),
    ({"kind": "max_softmax", "threshold": 1.5}, r"must be in \[0, 1\]"),
    ({"kind": "entropy", "threshold": "low"}, "must be a number"),
    ({"kind": "ao_margin", "ratio": 1, "num_classes": 3, "bandwidth": 0.05, "min_pair_samples": 40,
      "grid_points": 3, "groups": {"0": {"n_correct": 1, "n_incorrect": 1, "log_odds": [0, 1, 2]}}},
     "pooled group"),
    ({"kind": "ao_margin", "ratio": 1, "num_classes": 3, "bandwidth": 0.05, "min_pair_samples": 40,
      "grid_points": 3, "groups": {"*": {"n_correct": 1, "n_incorrect": 1, "log_odds": [0, 1]}}},
     "list of 3 finite numbers"),
    ({"kind": "ao_margin", "ratio": 1, "num_classes": 3, "bandwidth": 0.05, "min_pair_samples": 40,
      "grid_points": 3, "groups": {"*": {"n_correct": 1, "n_incorrect": 1, "log_odds": [0, 1, 2]},
                                   "1,1": {"n_correct": 1, "n_incorrect": 0, "log_odds": None}}}, "a != b"),
    ({"kind": "ao_margin", "ratio": -1, "num_classes": 3, "bandwidth": 0.05, "min_pair_samples": 40,
      "grid_points": 3, "groups": {"*": {"n_correct": 1, "n_incorrect": 1, "log_odds": [0, 1, 2]}}}, "ratio"),
])
def test_bad_criterion_json_is_named(doc, message):
    with pytest.raises(PolicyError, match=message):
        ExitCriterion.from_dict(doc)


def test_policy_file_errors_name_the_exit(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": "ddnn.policy/v1", "exits": {"block7": {"kind": "max_softmax",
                                                                                  "threshold": 2}}}))
    with pytest.raises(PolicyError, match=r"p\.json: exits\.block7: .*\[0, 1\]"):
        EdgePolicy.load(path)


def test_bad_drop_rule_message_shows_the_expected_shape():
    doc = {"format": "ddnn.policy/v1", "exits": {"e1": {"kind": "max_softmax", "threshold": 0.5}},
           "drop": {"kind": "entropy", "threshold": 0.5}}
    with pytest.raises(PolicyError) as err:
        EdgePolicy.from_dict(doc)
    # Single braces: the user is shown the JSON to write, not format-string escapes.
    assert str(err.value) == "policy: field 'drop' must be null or {'kind': 'normalized_entropy', 'threshold': T}"


# --- the ExitCriterion contract ------------------------------------------------------------------

def test_every_registered_criterion_implements_the_whole_contract():
    # Calibration and the SLO controller call these on any criterion; a kind missing one must
    # fail when it is defined and used, not when a service first calibrates or controls it.
    needed = {"knob", "with_knob", "confidence", "accept", "critical_knob", "knob_bounds", "to_dict", "_from_dict"}
    assert needed <= ExitCriterion.__abstractmethods__
    assert set(ExitCriterion.registry) == {"max_softmax", "entropy", "normalized_entropy", "ao_margin"}
    for kind, cls in ExitCriterion.registry.items():
        assert not cls.__abstractmethods__, f"{kind} leaves {sorted(cls.__abstractmethods__)} abstract"


def test_a_criterion_without_critical_knob_cannot_be_made():
    class NoFlipPoints(MaxSoftmaxCriterion):
        kind = ""  # unregistered, so the real max_softmax stays in the registry
        critical_knob = ExitCriterion.critical_knob  # the abstract declaration again

    with pytest.raises(TypeError, match="critical_knob"):
        NoFlipPoints(0.5)


@pytest.mark.parametrize(("crit", "bounds"), [
    (MaxSoftmaxCriterion(0.5), (0.0, 1.0)), (EntropyCriterion(0.5), (0.0, math.log(10))),
    (NormalizedEntropyCriterion(0.5), (0.0, 1.0)), (fit_ao_margin(*synthetic_probs(200)), (0.0, None)),
])
def test_knob_bounds_per_kind(crit, bounds):
    assert crit.knob_bounds(10) == bounds


# --- EdgePolicy.decide ------------------------------------------------------------------------------

def test_decide_exits_continues_and_drops_only_at_the_last_exit():
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.34, 0.33, 0.33]])
    policy = EdgePolicy({"e1": MaxSoftmaxCriterion(0.8)}, DropRule(0.95))
    inner = policy.decide("e1", logits_of(probs), last=False)
    last = policy.decide("e1", logits_of(probs), last=True)
    assert inner.decision.tolist() == [Decision.EXIT, Decision.CONTINUE, Decision.CONTINUE]
    assert last.decision.tolist() == [Decision.EXIT, Decision.CONTINUE, Decision.DROP]  # H/log3 of row 3 > 0.95
    assert last.prediction.tolist() == [0, 0, 0]
    assert np.allclose(last.confidence, [0.9, 0.5, 0.34])


def test_with_knobs_changes_only_named_exits():
    policy = EdgePolicy({"e1": MaxSoftmaxCriterion(0.8), "e2": fit_ao_margin(*synthetic_probs(500))})
    turned = policy.with_knobs({"e2": 3.0})
    assert turned.criteria["e1"].knob == 0.8 and turned.criteria["e2"].knob == 3.0
    assert policy.criteria["e2"].knob == 1.0
    with pytest.raises(PolicyError, match="e9"):
        policy.with_knobs({"e9": 1.0})


# --- monotone knobs (property) -------------------------------------------------------------------

_AO = fit_ao_margin(*synthetic_probs(2000, classes=4, seed=5), min_pair_samples=30)
_KNOB_RANGE = {"max_softmax": (0.0, 1.0), "entropy": (0.0, math.log(4)), "normalized_entropy": (0.0, 1.0),
               "ao_margin": (0.0, 50.0)}
_CRITERIA = [MaxSoftmaxCriterion(0.5), EntropyCriterion(0.5), NormalizedEntropyCriterion(0.5), _AO]


@settings(max_examples=60, deadline=None)
@given(logits=arrays(np.float64, (40, 4), elements=st.floats(-8, 8)),
       which=st.sampled_from(range(len(_CRITERIA))), u=st.floats(0, 1), v=st.floats(0, 1))
def test_exit_set_grows_monotonically_with_the_knob(logits, which, u, v):
    crit = _CRITERIA[which]
    lo, hi = _KNOB_RANGE[crit.kind]
    k1, k2 = sorted((lo + u * (hi - lo), lo + v * (hi - lo)))
    probs = softmax(logits)
    a1, a2 = crit.with_knob(k1).accept(probs), crit.with_knob(k2).accept(probs)
    more, fewer = (a2, a1) if crit.knob_increases_exits else (a1, a2)
    assert not (fewer & ~more).any()  # every sample exiting at the stricter knob exits at the looser one
    # critical_knob says exactly where each decision flips.
    c = crit.critical_knob(probs)
    flip = (k1 > c) if crit.knob_increases_exits else ((k1 <= c) if crit.kind == "ao_margin" else (k1 < c))
    assert np.array_equal(flip, a1)


def test_shipped_policy_belongs_to_the_shipped_checkpoint():
    from ddnn.checkpoint import file_sha256
    from ddnn.paths import SHIPPED_CHECKPOINT, SHIPPED_POLICY

    policy = EdgePolicy.load(SHIPPED_POLICY)
    # One AO criterion per edge depth: block7 for normal mode, block4 for WS mode, each fitted alone.
    assert sorted(policy.criteria) == ["block4", "block7"]
    assert all(c.kind == "ao_margin" for c in policy.criteria.values())
    # A retrained checkpoint needs a recalibrated policy (`ddnn calibrate`, see docs/exit-policies.md).
    sha = file_sha256(SHIPPED_CHECKPOINT)
    for exit, meta in policy.meta["per_exit"].items():
        assert meta["checkpoint_sha256"] == sha and meta["exits"] == [exit]
        assert meta["target"] == {"kind": "accuracy_loss", "value": 0.0}
