from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from audit.compare import compare_importances, ndcg
from audit.types import Importance


def _imp(names: tuple[str, ...], values: list[float], method: str = "permutation") -> Importance:
    return Importance(method=method, feature_names=names, values=np.array(values, dtype=float))


def test_identical_rankings() -> None:
    names = ("a", "b", "c", "d", "e", "f")
    result = compare_importances(_imp(names, [6, 5, 4, 3, 2, 1]), _imp(names, [60, 50, 40, 30, 20, 10]))
    assert result.spearman == pytest.approx(1.0)
    assert result.top_k == 5 and result.top_k_overlap == 1.0
    assert all(change.rank_change == 0 for change in result.changes)


def test_changes_are_aligned_by_name_not_position() -> None:
    now = _imp(("b", "a", "new"), [1.0, 3.0, 0.5])
    before = _imp(("a", "b", "gone"), [2.0, 1.0, 4.0])
    result = compare_importances(now, before, top_k=2)
    changes = {change.feature: change for change in result.changes}
    assert changes["a"].value == 3.0 and changes["a"].previous_value == 2.0
    assert changes["a"].delta == pytest.approx(1.0) and changes["a"].relative_change == pytest.approx(0.5)
    assert changes["a"].rank == 1 and changes["a"].previous_rank == 2 and changes["a"].rank_change == 1
    assert changes["new"].previous_value is None and changes["new"].delta is None
    assert changes["gone"].value is None and changes["gone"].rank is None
    # top-2 now {a, b}; before {gone, a}: one shared
    assert result.top_k_overlap == pytest.approx(0.5)
    assert result.spearman is None  # only two shared features


def test_reversed_ranking() -> None:
    names = ("a", "b", "c", "d")
    result = compare_importances(_imp(names, [1, 2, 3, 4]), _imp(names, [4, 3, 2, 1]), top_k=2)
    assert result.spearman == pytest.approx(-1.0)
    assert result.top_k_overlap == 0.0


def test_biggest_movers_are_ordered_by_absolute_change() -> None:
    now = _imp(("big", "tiny", "steady", "new"), [1.1, 0.017, 0.3, 0.2])
    before = _imp(("big", "tiny", "steady", "gone"), [0.5, 0.001, 0.3, 0.4])
    movers = [change.feature for change in compare_importances(now, before).biggest_movers]
    # tiny's +1600% is noise next to big's +120%; one-sided features come last
    assert movers[:3] == ["big", "tiny", "steady"]
    assert set(movers[3:]) == {"new", "gone"}


def test_methods_must_match() -> None:
    with pytest.raises(ValueError, match="cannot compare"):
        compare_importances(_imp(("a",), [1.0]), _imp(("a",), [1.0], method="weight_sum"))


# --- the Clarify-compatible nDCG: ties as scikit-learn's ndcg_score --------------------------------


def test_ndcg_with_ties_is_scikit_learns_ndcg_score() -> None:
    """Negative permutation importances clipped to 0 tie; tied features share their positions'
    discounts (scikit-learn's default, ignore_ties=False), so the order of the input does not matter."""
    previous = np.array([0.30, 0.20, -0.01, 0.05, 0.20, -0.02])
    current = np.array([0.25, -0.03, 0.25, 0.0, 0.10, -0.01])  # three features clip to 0: a tie
    expected = ndcg_score([np.clip(previous, 0, None)], [np.clip(current, 0, None)])
    assert ndcg(current, previous) == pytest.approx(expected, rel=1e-12)
    order = np.array([5, 3, 1, 0, 4, 2])  # the same features in another order: the same figure
    assert ndcg(current[order], previous[order]) == pytest.approx(expected, rel=1e-12)
    # a stable argsort (ties broken by position) would give another number here
    broken = np.argsort(-np.clip(current, 0, None), kind="stable")
    discount = 1 / np.log2(np.arange(2, 8))
    by_position = np.sum(np.clip(previous, 0, None)[broken] * discount) / np.sum(
        np.sort(np.clip(previous, 0, None))[::-1] * discount
    )
    assert by_position != pytest.approx(expected, rel=1e-6)


def test_ndcg_matches_scikit_learn_on_random_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 12))
        previous, current = np.round(rng.normal(size=n), 1), np.round(rng.normal(size=n), 1)
        ours = ndcg(current, previous)
        if ours is not None:
            reference = ndcg_score([np.clip(previous, 0, None)], [np.clip(current, 0, None)])
            assert ours == pytest.approx(reference, rel=1e-12, abs=1e-15)


def test_figures_of_two_method_versions_are_not_compared() -> None:
    names = ("a", "b", "c")
    old = Importance("saliency", names, np.array([-1.0, 0.5, 0.1]), signed=True)
    new = Importance("saliency", names, np.array([1.0, 0.6, 0.1]), method_version=2)
    result = compare_importances(new, old)
    assert not result.comparable and (result.method_version, result.previous_method_version) == (2, 1)
    assert result.spearman is None and result.ndcg is None and result.changes == ()
    assert compare_importances(new, new).comparable
