"""What the drift rule could have seen this week: the smallest change of each feature it would flag.

An "ok" verdict says nothing moved beyond noise; this module says how large a move would have had
to be. For one method, the rule (audit/drift.py) flags feature f when its centred log ratio leaves
the band::

    change_f = log((v_f + eps) / (v'_f + eps')) - median_g log((v_g + eps) / (v'_g + eps'))
    flagged  when |change_f| > h  (h = threshold x scale of f's noise band)

with eps = `epsilon_fraction` x the method's total over the shared features (v_f included) and
eps' the same of the previous drop. Holding the previous drop, every other feature and the band as
they are, the smallest **rise** of f's own value that the rule flags is the value u > v'_f where
change_f(u) crosses h, and the smallest **fall** where it crosses -h. Both are solved on the
rule's own formula, epsilon and the median's own move included (when f moves, eps moves every
ratio, and f may cross the median): change_f(u) is continuous and non-decreasing in u (its
derivative is d log(u + eps) - d log(v_m + eps) >= 0 for the median feature m, since
d eps / du = `epsilon_fraction` < 1), so each crossing is found by bisection to float precision
and then checked, and if needed nudged by a few ulps, with the rule itself (`check` below): a
change of exactly the stated size is flagged, a smaller one is not. The band is held as it is: its
sampling part is the figure's standard error relative to its value, assumed to keep that relative
size when the value moves. A feature the rule does not judge (under `min_share` of the method in
both drops) has no detectable change; one judged only through this week's share stops being judged
when it falls below `min_share`, which the fall accounts for.

Said on the feature's own value (`PlainBand`, value / previous value - 1), the band folds in the
method's median change this week: when every feature of a method rose 40%, a feature that stayed
put is flagged as a relative fall, and its plain band is centred near +40%, not 0.

Per feature, the change that enough methods flag together is the k-th smallest rise (and fall)
over the verdict methods holding it (k = `min_agreeing_methods`, or all of them when fewer hold
it), as `audit.drift` needs k methods to agree.

**Copies advice.** A band's scale mixes retraining noise, which reseeded copies in a drop average
away (`audit.drift.drop_figure`), and sampling noise of the eval sample (the figures' standard
errors: copies are scored on the same sample, so it stays; it shrinks as 1/sqrt(rows)). With k
models per drop in both drops, a change's retraining variance is 2 s1^2 / k for one model's s1;
the sampling variance of a change is the band's `sampling_scale`^2, and history-based bands count
it twice (past changes of figures already hold it, and the rule adds it again). `copies_advice`
predicts each band for k' models and n' rows, recomputes the detectable changes, and gives the
smallest k' (at today's rows) and n' (at today's models) that bring the top features' largest
detectable rise or fall under `DriftConfig.target_detectable_change`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from audit.types import (
    BandSource,
    CopiesAdvice,
    DetectableChange,
    DriftConfig,
    FloatArray,
    NoiseBand,
    PlainBand,
)

#: Upper end of the search on s = q / (1 + q), q = value / previous value: q ~ 1e13 stands for
#: "a change of any size" (no rise smaller than that is flagged: none is).
_S_MAX = 1.0 - 1e-13
#: Bisection steps on s: 2^-64 is below float precision (stated edges, then nudged by ulps).
_ITERATIONS = 64
#: Bisection steps for the copies advice's predictions: s within 2^-24 (a detectable change within
#: about 1e-6 of its own size), far finer than whole models or rows; a third of the work.
_ADVICE_ITERATIONS = 24
#: Rows of the (feature x feature) matrix evaluated at once (memory stays under ~16 MB).
_CHUNK_CELLS = 2_000_000
#: Ulp steps tried when checking a stated change against the rule itself (the bisection ends within
#: a few ulps; the rule's scalar logs may differ from numpy's in the last one).
_NUDGES = 64
#: Features the copies advice is about, and the most models per drop it considers.
ADVICE_FEATURES = 3
MAX_MODELS = 32
#: Eval rows are searched up to this multiple of today's.
MAX_ROWS_FACTOR = 10_000.0
#: Multiples of today's eval rows tried with more copies when neither lever alone is enough.
COMBINED_ROWS_FACTORS = (2, 4, 8, 16)

#: (feature index, value) -> (flagged as a rise, flagged as a fall) by the rule itself.
RuleCheck = Callable[[int, float], tuple[bool, bool]]


@dataclass(frozen=True)
class MethodFigures:
    """One method's magnitudes in two drops, as the rule's change compares them.

    `now`, `before` (n_shared,) are the magnitudes of the features both drops hold, in the rule's
    order (`names`); shares count every feature of a drop, so this drop's total over all its
    features and the previous shares of the shared ones are given too.
    """

    method: str
    names: tuple[str, ...]
    now: FloatArray
    before: FloatArray
    total_now: float
    share_before: FloatArray
    epsilon_fraction: float
    min_share: float

    def judged(self) -> np.ndarray:
        """The features the rule judges this week: at least `min_share` in one of the two drops."""
        share_now = self.now / self.total_now if self.total_now > 0 else np.zeros_like(self.now)
        return np.maximum(share_now, self.share_before) >= self.min_share


def plain_change(value: float | None, previous: float | None) -> float | None:
    """value / previous - 1 (0.45 = rose 45%); None when either is missing or previous is not > 0."""
    if value is None or previous is None or not (math.isfinite(value) and math.isfinite(previous)):
        return None
    if previous <= 0:
        return None
    return value / previous - 1.0


def plain_bands(
    figures: MethodFigures,
    half_widths: Sequence[float | None],
    check: RuleCheck | None = None,
    *,
    iterations: int = _ITERATIONS,
) -> list[PlainBand | None]:
    """Each shared feature's band on its plain change (None where the rule does not judge it).

    Parameters
    ----------
    figures : the method's magnitudes in the two drops.
    half_widths : (n_shared,) each feature's band half-width h on the centred change (None: no band).
    check : the rule itself on a changed value (`audit.drift`); stated edges are nudged until it
        flags them. None: the bisection's result as it is (used by the copies advice's predictions).
    iterations : bisection steps on s = q / (1 + q) (64: float precision).
    """
    n = len(figures.names)
    h = np.array([np.nan if width is None else float(width) for width in half_widths], dtype=np.float64)
    if h.shape != (n,):
        raise ValueError(f"{figures.method}: {h.shape[0]} half-widths for {n} features")
    usable = figures.judged() & np.isfinite(h) & (figures.before > 0)
    rows = np.flatnonzero(usable)
    bands: list[PlainBand | None] = [None] * n
    if rows.size == 0:
        return bands
    high_u = _bisect(figures, rows, lambda changes: changes > h[rows], False, iterations)
    low_u = _bisect(figures, rows, lambda changes: changes < -h[rows], True, iterations)
    floor_u = _judged_from(figures, rows)
    for i, row in enumerate(rows):
        previous = float(figures.before[row])
        high: float | None = None
        if math.isfinite(high_u[i]):
            high = float(max(high_u[i], floor_u[i])) / previous - 1.0
            if check is not None:
                high = _nudge_rise(check, int(row), previous, high)
        low: float | None = None
        if math.isfinite(low_u[i]) and low_u[i] > floor_u[i]:
            low = float(low_u[i]) / previous - 1.0
            if check is not None:
                low = _nudge_fall(check, int(row), previous, low)
        bands[row] = PlainBand(low=low, high=high)
    return bands


def agreed_detectable(bands: Sequence[PlainBand | None], agreeing: int) -> DetectableChange | None:
    """The rise and fall that `agreeing` of these methods flag together: the k-th smallest of each
    (k = `agreeing`, or all when fewer); a method that does not judge the feature never flags it.
    None when no method judges it."""
    if not bands or all(band is None for band in bands):
        return None
    k = min(agreeing, len(bands))
    detectable = [None if band is None else band.detectable for band in bands]
    rises = sorted(math.inf if d is None or d.rise is None else d.rise for d in detectable)
    falls = sorted(math.inf if d is None or d.fall is None else d.fall for d in detectable)
    rise, fall = rises[k - 1], falls[k - 1]
    return DetectableChange(rise if math.isfinite(rise) else None, fall if math.isfinite(fall) else None)


# --------------------------------------------------------------------------- the search


def _changes_if(figures: MethodFigures, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """change_f of feature rows[i] when its value is values[i] and every other is as it is."""
    before = figures.before
    total_before = float(np.sum(before))
    eps_before = figures.epsilon_fraction * total_before if total_before > 0 else 1e-12
    out = np.empty(rows.shape[0], dtype=np.float64)
    step = max(1, _CHUNK_CELLS // max(len(figures.names), 1))
    for start in range(0, rows.shape[0], step):
        chunk = rows[start : start + step]
        index = np.arange(chunk.shape[0])
        matrix = np.repeat(figures.now[np.newaxis, :], chunk.shape[0], axis=0)
        matrix[index, chunk] = values[start : start + step]
        totals = matrix.sum(axis=1)
        eps = np.where(totals > 0, figures.epsilon_fraction * totals, 1e-12)
        ratios = np.log((matrix + eps[:, np.newaxis]) / (before + eps_before))
        out[start : start + step] = ratios[index, chunk] - _row_medians(ratios)
    return out


def _row_medians(matrix: np.ndarray) -> np.ndarray:
    """np.median(matrix, axis=1) by one partial sort (the search calls it thousands of times on small
    matrices, where np.median's own overhead was most of the time)."""
    if np.isnan(matrix).any():  # np.median's answer for a row holding NaN
        nan_rows: np.ndarray = np.median(matrix, axis=1)
        return nan_rows
    n = matrix.shape[1]
    middle = n // 2
    if n % 2:
        odd: np.ndarray = np.partition(matrix, middle, axis=1)[:, middle]
        return odd
    parted = np.partition(matrix, (middle - 1, middle), axis=1)
    even: np.ndarray = (parted[:, middle - 1] + parted[:, middle]) / 2.0
    return even


def _values(figures: MethodFigures, rows: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The value q x previous for s = q / (1 + q)."""
    values: np.ndarray = figures.before[rows] * (s / (1.0 - s))
    return values


def _bisect(
    figures: MethodFigures,
    rows: np.ndarray,
    flagged: Callable[[np.ndarray], np.ndarray],
    low_side: bool,
    iterations: int,
) -> np.ndarray:
    """Per row, the edge of the flagged values: the smallest flagged value (a rise, `low_side`
    False) or the largest (a fall); inf where none is flagged. `flagged` maps changes to booleans."""
    at_zero = flagged(_changes_if(figures, rows, np.zeros(rows.shape[0])))
    at_max = flagged(_changes_if(figures, rows, _values(figures, rows, np.full(rows.shape[0], _S_MAX))))
    inside = np.zeros(rows.shape[0])  # s on the unflagged side
    edge = np.full(rows.shape[0], _S_MAX)  # s on the flagged side
    if low_side:
        inside, edge = edge, np.zeros(rows.shape[0])
    for _ in range(iterations):
        middle = (inside + edge) / 2.0
        hit = flagged(_changes_if(figures, rows, _values(figures, rows, middle)))
        edge = np.where(hit, middle, edge)
        inside = np.where(hit, inside, middle)
    result = _values(figures, rows, edge)
    if low_side:
        result = np.where(at_zero, result, math.inf)  # not even zero is flagged: no fall is
        return np.where(at_max, _values(figures, rows, np.full(rows.shape[0], _S_MAX)), result)
    result = np.where(at_max, result, math.inf)  # not even a huge value is flagged: no rise is
    return np.where(at_zero, 0.0, result)


def _judged_from(figures: MethodFigures, rows: np.ndarray) -> np.ndarray:
    """The smallest value at which each feature is judged (0 when last week's share suffices)."""
    others = figures.total_now - figures.now[rows]
    share = figures.min_share
    if share >= 1.0:
        needed = np.full(rows.shape[0], math.inf)
    else:
        needed = np.maximum(share * others / (1.0 - share), 0.0)
    return np.where(figures.share_before[rows] >= share, 0.0, needed)


def _nudge_rise(check: RuleCheck, row: int, previous: float, high: float) -> float:
    """The stated rise, raised by ulps until previous x (1 + rise) is flagged by the rule itself
    (as found when the rule never agrees within `_NUDGES` ulps)."""
    nudged = high
    for _ in range(_NUDGES):
        if check(row, previous * (1.0 + nudged))[0]:
            return nudged
        nudged = float(np.nextafter(nudged, math.inf))
    return high


def _nudge_fall(check: RuleCheck, row: int, previous: float, low: float) -> float:
    """The stated fall's edge, lowered by ulps until previous x (1 + low) is flagged."""
    nudged = low
    for _ in range(_NUDGES):
        if nudged < -1.0:
            break
        if check(row, previous * (1.0 + nudged))[1]:
            return nudged
        nudged = float(np.nextafter(nudged, -math.inf))
    return low


# --------------------------------------------------------------------------- copies advice


@dataclass(frozen=True)
class MethodNoise:
    """What the copies advice needs of one verdict method: its figures and each feature's band."""

    figures: MethodFigures
    #: (n_shared,) the band of each shared feature (None: none).
    bands: tuple[NoiseBand | None, ...]
    #: Models averaged in this drop's figure and in the previous drop's.
    models_now: int
    models_before: int


def predicted_scale(
    band: NoiseBand,
    models_now: int,
    models_before: int,
    models: float,
    rows_factor: float,
    config: DriftConfig,
) -> float | None:
    """The band's scale with `models` per drop and `rows_factor` x today's eval rows (None: the band
    is the default one, nothing was measured)."""
    if band.source is BandSource.DEFAULT:
        return None
    sampling = band.sampling_scale**2
    retrain = band.retrain_scale**2
    if band.source is BandSource.RESEED:
        # the copies' spread: retraining only (they share the eval sample)
        retraining, counted = retrain, sampling
    else:
        # past changes of figures hold their sampling noise too; the rule adds it again
        inside = min(sampling, retrain)
        retraining, counted = retrain - inside, inside + sampling
    per_model = retraining / (1.0 / max(models_now, 1) + 1.0 / max(models_before, 1))
    variance = per_model * 2.0 / models + counted / rows_factor
    return max(math.sqrt(variance), config.min_scale)


#: (rise capped, fall capped): a direction no noise level makes detectable (`copies_advice`).
Caps = tuple[tuple[bool, bool], ...]


def _detectables(
    methods: Sequence[MethodNoise],
    features: Sequence[str],
    models: float,
    rows_factor: float,
    config: DriftConfig,
) -> list[DetectableChange | None] | None:
    """Each feature's agreed detectable change with predicted bands (None: not estimable)."""
    per_feature: dict[str, list[PlainBand | None]] = {name: [] for name in features}
    estimable = False
    for method in methods:
        typical = _typical_week(method.figures)
        widths: list[float | None] = []
        for name, noise in zip(method.figures.names, method.bands, strict=True):
            scale = None
            if noise is not None and name in per_feature:
                scale = predicted_scale(
                    noise, method.models_now, method.models_before, models, rows_factor, config
                )
            widths.append(None if scale is None else config.threshold * scale)
            estimable = estimable or scale is not None
        predicted = plain_bands(typical, widths, iterations=_ADVICE_ITERATIONS)
        for name, band in zip(typical.names, predicted, strict=True):
            if name in per_feature:
                per_feature[name].append(band)
    if not estimable:
        return None
    return [agreed_detectable(per_feature[name], config.min_agreeing_methods) for name in features]


def _largest(found: Sequence[DetectableChange | None], caps: Caps) -> list[float]:
    """Each feature's largest detectable rise or fall over the directions not capped."""
    result = []
    for detectable, (rise_capped, fall_capped) in zip(found, caps, strict=True):
        values = []
        if not rise_capped:
            values.append(math.inf if detectable is None or detectable.rise is None else detectable.rise)
        if not fall_capped:
            values.append(math.inf if detectable is None or detectable.fall is None else detectable.fall)
        result.append(max(values, default=0.0))
    return result


def _typical_week(figures: MethodFigures) -> MethodFigures:
    """The method's figures in a week where nothing moved (this week's values = last week's): the
    advice is about the noise, not about this week's overall shift of the method, which is itself
    noise that more copies or rows would shrink."""
    before = figures.before.copy()
    return replace(figures, now=before, total_now=float(before.sum()))


def copies_advice(
    methods: Sequence[MethodNoise], features: Sequence[str], rows_now: int | None, config: DriftConfig
) -> CopiesAdvice:
    """How many models per drop, or eval rows, would bring `features`' detectable change under the
    target: their largest detectable rise or fall, agreed over the methods as the verdict is, in a
    week where the method's figures did not move overall (`_typical_week`).

    A direction that stays undetectable even with `MAX_MODELS` models and `MAX_ROWS_FACTOR` x the
    rows is capped by the rule itself, not by noise (e.g. the rise of a feature holding most of the
    importance: the centring sees it only as the others' fall, which the epsilon floor hides); it
    is named in `capped` and left out of the target.
    """
    target = config.target_detectable_change
    models_now = max((m.models_now for m in methods), default=1)
    today = _detectables(methods, features, models_now, 1.0, config)
    limit = _detectables(methods, features, MAX_MODELS, MAX_ROWS_FACTOR, config)
    if today is None or limit is None or not features:
        return CopiesAdvice(
            target, tuple(features), (), models_now, rows_now, None, None, False,
            "not estimable yet: without history or reseeded copies the noise cannot be split into "
            "retraining and sampling",
        )  # fmt: skip
    caps: Caps = tuple((d is None or d.rise is None, d is None or d.fall is None) for d in limit)
    capped = tuple(
        f"{name} {direction}"
        for name, (rise_capped, fall_capped) in zip(features, caps, strict=True)
        for direction, is_capped in (("rise", rise_capped), ("fall", fall_capped))
        if is_capped
    )
    models_needed = _models_needed(methods, features, caps, models_now, config)
    rows_needed = (
        None if rows_now is None else _rows_needed(methods, features, caps, models_now, rows_now, config)
    )
    combined = None
    if models_needed is None and rows_needed is None and rows_now is not None:
        combined = _combined_needed(methods, features, caps, models_now, rows_now, config)
    advice = CopiesAdvice(
        target=target,
        features=tuple(features),
        detectable_now=tuple(_largest(today, caps)),
        models_now=models_now,
        rows_now=rows_now,
        models_needed=models_needed,
        rows_needed=rows_needed,
        estimable=True,
        text="",
        capped=capped,
        combined=combined,
    )
    return replace(advice, text=advice_text(advice))


def _reached(
    methods: Sequence[MethodNoise],
    features: Sequence[str],
    caps: Caps,
    models: float,
    rows_factor: float,
    config: DriftConfig,
) -> bool:
    found = _detectables(methods, features, models, rows_factor, config)
    return found is not None and max(_largest(found, caps), default=0.0) <= config.target_detectable_change


def _combined_needed(
    methods: Sequence[MethodNoise],
    features: Sequence[str],
    caps: Caps,
    models_now: int,
    rows_now: int,
    config: DriftConfig,
) -> tuple[int, int] | None:
    """The fewest models per drop with 2, 4, 8 or 16 x today's rows, the fewest rows first."""
    for factor in COMBINED_ROWS_FACTORS:
        models = _models_needed(methods, features, caps, models_now, config, rows_factor=float(factor))
        if models is not None:
            return models, rows_now * factor
    return None


def _models_needed(
    methods: Sequence[MethodNoise],
    features: Sequence[str],
    caps: Caps,
    models_now: int,
    config: DriftConfig,
    *,
    rows_factor: float = 1.0,
) -> int | None:
    """The fewest models per drop (at `rows_factor` x today's eval rows) that reach the target, by
    bisection on the models (the predicted bands, and so the detectable changes, shrink as they
    grow)."""

    def reached(models: int) -> bool:
        return _reached(methods, features, caps, models, rows_factor, config)

    if reached(models_now):
        return models_now
    if models_now >= MAX_MODELS or not reached(MAX_MODELS):
        return None
    low, high = models_now, MAX_MODELS  # low does not reach it, high does
    while high - low > 1:
        middle = (low + high) // 2
        if reached(middle):
            high = middle
        else:
            low = middle
    return high


def _rows_needed(
    methods: Sequence[MethodNoise],
    features: Sequence[str],
    caps: Caps,
    models_now: int,
    rows_now: int,
    config: DriftConfig,
) -> int | None:
    """The fewest eval rows (at today's models per drop) that reach the target, by bisection on the
    rows (the detectable change shrinks as they grow)."""

    def reached(factor: float) -> bool:
        return _reached(methods, features, caps, models_now, factor, config)

    if reached(1.0):
        return rows_now
    if not reached(MAX_ROWS_FACTOR):
        return None
    low, high = float(rows_now), float(rows_now) * MAX_ROWS_FACTOR
    while high - low > max(1.0, 0.005 * low):
        middle = math.sqrt(low * high)
        if reached(middle / rows_now):
            high = middle
        else:
            low = middle
    return math.ceil(high)


def advice_text(advice: CopiesAdvice) -> str:
    """One sentence for the report, e.g. "to see a 50% change of pm2.5 and DEWP (with today's noise
    120% and 180%): 4 models per drop (3 reseeded copies; today 1), or 2,400 eval rows (1,800
    more)"; directions no noise level makes detectable are named after it."""
    if not advice.estimable:
        return advice.text
    names = _join(list(advice.features))
    today = _join(
        [f"{value:.0%}" if math.isfinite(value) else "none at any size" for value in advice.detectable_now]
    )
    never = ""
    if advice.capped:
        never = (
            f"; the rule cannot see a {_join(list(advice.capped))} at any noise level (a feature "
            "holding most of the importance rises only against the others, which sit under the "
            "epsilon floor)"
        )
    if max(advice.detectable_now, default=0.0) <= advice.target:
        return f"the audit already sees a {advice.target:.0%} change of {names} (today {today}){never}"
    head = f"to see a {advice.target:.0%} change of {names} (today {today}): "
    if advice.models_needed is None and (advice.rows_now is None or advice.rows_needed is None):
        alone = (
            f"neither more reseeded copies (up to {MAX_MODELS} models per drop) nor more eval rows alone"
            if advice.rows_now is not None
            else f"more reseeded copies alone (up to {MAX_MODELS} models per drop)"
        )
        if advice.combined is not None:
            models, rows = advice.combined
            return f"{head}{alone} would; {models} models per drop with {rows:,} eval rows would{never}"
        return f"{head}{alone} would, nor both together{never}"
    options, notes = [], []
    if advice.models_needed is not None:
        copies = advice.models_needed - 1
        options.append(
            f"{advice.models_needed} models per drop ({copies} reseeded cop{'y' if copies == 1 else 'ies'}; "
            f"today {advice.models_now})"
        )
    else:
        notes.append(f"more reseeded copies alone would not (up to {MAX_MODELS} models per drop)")
    if advice.rows_now is not None and advice.rows_needed is not None:
        more = advice.rows_needed - advice.rows_now
        options.append(f"{advice.rows_needed:,} eval rows ({more:,} more)")
    elif advice.rows_now is not None:
        notes.append("more eval rows alone would not")
    return head + ", or ".join(options) + "".join(f"; {note}" for note in notes) + never


def _join(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]
