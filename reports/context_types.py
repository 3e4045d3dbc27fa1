"""The dataclasses of the weekly report: `ReportContext`, its sections and rows, and `Chart`.

`reports.context.build_context` fills them (through `reports.sections`); `report.html` renders them.

Plain, frozen data: values stay raw numbers (floats, ints, dates), formatted by the registered Jinja
filters of `reports.render`; feature names stay raw strings, escaped by the template.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from audit.types import DropProvenance, InterruptedRun, ModelEvaluation, PerformanceDrift


@dataclass(frozen=True)
class Chart:
    """One PNG chart of the report: its bytes, its Content-ID in the email, and its alt text.

    `width` and `height` are the PNG's size in pixels (the figures are drawn at the column's
    width, 700 px), written into the img tag so a mail client reserves the space.
    """

    cid: str
    png: bytes
    alt: str
    width: int
    height: int


@dataclass(frozen=True)
class ComparisonLine:
    """One headline line: how a method's ranking moved since the previous drop."""

    method: str
    spearman: float | None
    top_k: int
    #: How many of this week's top k features were also in the previous top k.
    top_k_shared: int | None
    kendall: float | None = None
    ndcg: float | None = None
    #: Mean distance (steps) between the two drops' normalised time profiles, if any.
    profile_distance: float | None = None
    #: The method's version this week and last week: figures of two versions are not comparable
    #: (`MethodComparison.comparable`), and such a line holds no statistics.
    method_version: int = 1
    previous_method_version: int = 1
    #: The nDCG is the Clarify-compatible figure (GradientSHAP attributions; `audit.compare.CLARIFY_METHOD`).
    clarify: bool = False

    @property
    def comparable(self) -> bool:
        return self.method_version == self.previous_method_version


@dataclass(frozen=True)
class ClarifyCheck:
    """SageMaker Clarify's attribution-drift rule on this drop, shown beside this tool's verdict: the
    nDCG of the GradientSHAP ranking against last week's (`audit.compare.ndcg`), alert below 0.90."""

    ndcg: float | None
    threshold: float

    @property
    def alert(self) -> bool | None:
        return None if self.ndcg is None else self.ndcg < self.threshold


@dataclass(frozen=True)
class VerdictRow:
    """One feature of the "What changed" table: a change beyond noise, or weaker evidence."""

    feature: str
    #: "changed", "new", "removed", or "weak" (flagged by one method only).
    verdict: str
    agreement: int
    n_methods: int
    #: The strongest flagging method, the feature's own change there (value / previous - 1) and
    #: the band said on that change (the method's median change folded in).
    method: str | None
    relative_change: float | None
    #: The noise band as text: "+-18%", or "-72% to +255%" when lopsided.
    band: str | None
    #: Lag shift (steps) and its band, when the time profile moved.
    profile_distance: float | None
    profile_band: float | None
    #: "model", "data", "both", "unclear" or None (frozen-set comparison).
    cause: str | None
    reason: str


@dataclass(frozen=True)
class AgreementRow:
    method: str
    other_method: str
    spearman: float | None


@dataclass(frozen=True)
class MoverRow:
    """One row of a method's biggest-movers table."""

    feature: str
    previous_value: float | None
    value: float | None
    delta: float | None
    relative_change: float | None
    previous_rank: int | None
    rank: int | None
    #: Places gained (positive) or lost since the previous drop.
    rank_change: int | None
    #: "up", "down", "same", or "" when the feature is missing from one of the drops.
    direction: str
    #: The noise band of this feature's change ("+-18%"), None without a drift call.
    band: str | None = None
    #: The change is beyond the band for this method.
    beyond_noise: bool = False
    #: "+" or "−": the sign of the method's direction this week (saliency's signed mean gradient),
    #: None for methods without one.
    sign: str | None = None


@dataclass(frozen=True)
class FeatureRow:
    """One row of the table of features not drawn in the chart."""

    feature: str
    rank: int
    value: float
    previous_rank: int | None
    #: As `MoverRow.sign`.
    sign: str | None = None


@dataclass(frozen=True)
class RankChange:
    """One line of a slope chart: a feature's rank last week and this week (None: not ranked)."""

    feature: str
    previous_rank: int | None
    rank: int | None
    #: This method's drift call flagged the feature (its importance or its time profile moved).
    beyond_noise: bool


@dataclass(frozen=True)
class MethodSection:
    """A method with a result this week: its charts and tables."""

    method: str
    chart: Chart
    n_features: int
    n_charted: int
    #: Features beyond the chart's top n (n_features - n_charted), listed in `rest`.
    n_more: int
    #: The previous drop has a result for this method (the chart shows both weeks).
    has_previous: bool
    #: A comparison with the previous drop exists (the movers table is shown).
    compared: bool
    movers: tuple[MoverRow, ...]
    rest: tuple[FeatureRow, ...]
    #: Features new this week, and features the previous drop had but this one does not.
    added: tuple[str, ...]
    removed: tuple[str, ...]
    #: Rank changes of the top features (previous rank -> this rank), None without a previous result.
    slope: Chart | None = None
    n_slope_beyond: int = 0
    #: Why last week's figures are not drawn although the method ran then (another method version).
    previous_note: str | None = None
    #: The method stores a direction beside its magnitudes (rows carry `sign`).
    has_direction: bool = False


@dataclass(frozen=True)
class ProfileSection:
    """A sequence method's time profiles: heat maps (step x feature) and lag profile lines."""

    method: str
    n_steps: int
    #: Features in the heat map rows (this week's most important), of `n_features` with a profile.
    n_shown: int
    n_features: int
    #: None when the profile has one column (Grad-CAM's "*"): the lag chart shows it.
    heatmap: Chart | None
    lags: Chart
    has_previous: bool
    #: Why last week's profile is not drawn although the method ran then (e.g. other window length).
    previous_note: str | None


@dataclass(frozen=True)
class HistorySection:
    """One method's importance of its top features over the last weeks (small multiples)."""

    method: str
    chart: Chart
    n_weeks: int
    first_week: dt.date
    last_week: dt.date
    n_features: int
    #: Weeks in the window without a figure for any shown feature.
    n_gaps: int


@dataclass(frozen=True)
class FrozenRow:
    """One feature of the frozen-set table: three scorings and the cause of its change."""

    feature: str
    previous_model_previous_data: float | None
    previous_model_this_data: float | None
    this_model_this_data: float | None
    #: "model", "data", "both", "unclear" for a changed feature, else None.
    cause: str | None
    changed: bool


@dataclass(frozen=True)
class FrozenSection:
    method: str
    rows: tuple[FrozenRow, ...]
    #: Features of the method (rows show the changed ones first, then the most important).
    n_features: int


@dataclass(frozen=True)
class IntegratedGradientsCheck:
    """The completeness check of integrated gradients: attributions should sum to F(x) - F(baseline)."""

    median_relative_delta: float | None
    max_relative_delta: float | None
    steps: int | None
    steps_requested: int | None


@dataclass(frozen=True)
class AdditivityCheck:
    """GradientSHAP's additivity gap: attributions should sum to F(x) - mean F(baselines)."""

    median_relative_gap: float | None
    max_relative_gap: float | None
    n_draws: int | None
    background_size: int | None


@dataclass(frozen=True)
class MethodNotice:
    """A method that was skipped or failed, and why."""

    method: str
    status: str
    reason: str


@dataclass(frozen=True)
class Timing:
    method: str
    status: str
    seconds: float


@dataclass(frozen=True)
class MethodCell:
    """One method's change of one feature in the overview, in units of its noise band (signed)."""

    method: str
    #: Short name shown in the cell, e.g. "perm" (the legend spells it out).
    label: str
    #: change / band half-width: beyond noise past +-1; None when not judged (one week only).
    units: float | None
    #: CSS class of the cell's colour: "u3", "u2", "u1" (rose), "n" (within half the band),
    #: "d1", "d2", "d3" (fell), "x" (not judged).
    tone: str
    #: A method whose changes decide the verdict (the others are shown, not judged).
    votes: bool


@dataclass(frozen=True)
class OverviewRow:
    """One feature of the overview: consensus ranks, every method's change, its inputs, its verdict."""

    feature: str
    #: Median rank over the verdict methods this week and last (None: not ranked that week).
    rank: float | None
    previous_rank: float | None
    cells: tuple[MethodCell, ...]
    #: Input drift: PSI against last week's eval sample, its band, and whether it shifted.
    psi: float | None
    psi_limit: float | None
    input_shifted: bool
    #: "changed", "new", "removed", "weak" (one method short of agreement), "inputs" (only its
    #: input distribution shifted) or "stable".
    verdict: str
    #: Frozen-set cause of a changed feature ("model", "data", "both", "unclear").
    cause: str | None
    reason: str | None


@dataclass(frozen=True)
class FeatureCard:
    """A chart of one of the most-changed features: its change per method and its inputs."""

    feature: str
    chart: Chart
    verdict: str
    reason: str | None


@dataclass(frozen=True)
class ReportContext:
    """Everything `report.html` renders, top to bottom."""

    model_name: str
    week: dt.date
    previous_week: dt.date | None
    run_id: int
    top_n: int
    #: "ok", "warn", "alert", or None for a first drop (nothing to compare).
    verdict: str | None
    verdict_reason: str | None
    #: How many reseeded copies or eval rows would let the audit see smaller changes (audit/
    #: sensitivity.py), or why that is not estimable yet; None without a drift call.
    copies_advice: str | None
    verdict_rows: tuple[VerdictRow, ...]
    agreement: tuple[AgreementRow, ...]
    comparisons: tuple[ComparisonLine, ...]
    sections: tuple[MethodSection, ...]
    notices: tuple[MethodNotice, ...]
    model_path: str
    model_hash: str
    n_parameters: int
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    task: str
    n_eval_samples: int | None
    eval_source: str | None
    #: Why the sample has fewer rows than its file, e.g. "3 rows with NaN/inf dropped", or None.
    eval_note: str | None
    timings: tuple[Timing, ...]
    #: Weeks without a drop between the previous drop and this one.
    missing_weeks: tuple[dt.date, ...] = ()
    profiles: tuple[ProfileSection, ...] = ()
    history: tuple[HistorySection, ...] = ()
    frozen: tuple[FrozenSection, ...] = ()
    #: The week of the previous model scored on this week's sample (frozen set), if it was.
    frozen_label: str | None = None
    evaluation: ModelEvaluation | None = None
    ig_check: IntegratedGradientsCheck | None = None
    #: GradientSHAP's additivity gap (model facts), if it ran.
    shap_check: AdditivityCheck | None = None
    #: SageMaker Clarify's rule (nDCG of GradientSHAP < 0.90) beside the verdict, when compared.
    clarify: ClarifyCheck | None = None
    #: File names of the drop's reseeded copies of the model.
    copies: tuple[str, ...] = ()
    #: Where a drop staged from an object store or MLflow came from (None: a local folder).
    provenance: DropProvenance | None = None
    #: Every chart, in the order the document shows them (the email's image parts).
    charts: tuple[Chart, ...] = ()
    #: The overview: one row per feature, changed features first, then by consensus rank.
    overview: tuple[OverviewRow, ...] = ()
    #: (label, method) of the overview's method cells, verdict methods first.
    overview_methods: tuple[tuple[str, str], ...] = ()
    #: Rows of the overview shown before the fold.
    overview_rows: int = 20
    #: Charts of the most-changed features (at most 3): what the e-mail shows.
    cards: tuple[FeatureCard, ...] = ()
    #: The eval loss against last week's, with band and verdict (None: not measured).
    performance: PerformanceDrift | None = None
    #: Inputs measured (input drift was computed) and whether they are sequences (p-values descriptive).
    inputs_measured: bool = False
    inputs_are_sequences: bool = False
    #: Where the full report is published (``--report-url``), for the e-mail's first link.
    report_link: str | None = None
    #: Audits of recent drops whose process was killed mid-audit (marked ``interrupted``).
    interrupted: tuple[InterruptedRun, ...] = ()
    #: The e-mail carries the full report as an attachment (report.html).
    report_attached: bool = True
