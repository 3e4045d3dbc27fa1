from __future__ import annotations

import numpy as np
import pytest

from audit.compare import compare_importances
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
