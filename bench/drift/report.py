"""Markdown tables and the power plot of the drift power study from its JSON results (no TensorFlow).

The block between ``<!-- drift:results:start -->`` and ``<!-- drift:results:end -->`` in
docs/drift-benchmark.md is replaced by `render` with ``bench/drift/run.py --docs``; the plot is
docs/drift-power.png.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

START, END = "<!-- drift:results:start -->", "<!-- drift:results:end -->"
FALSE_ALARMS, CELL_RATIO, HONEST, NAMING, ORACLE_CELL = 0.05, 0.90, 0.95, 0.95, 0.80
SHORT = {
    "permutation": "perm",
    "perturbation": "pert",
    "integrated_gradients": "IG",
    "gradient_x_input": "GxI",
    "sensitivity_sweep": "sweep",
}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def frac(hits: int, total: int) -> str:
    return "—" if total == 0 else f"{hits}/{total} ({100 * hits / total:.0f}%)"


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"


def key_text(key: str) -> str:
    parts = key.split("|")
    if parts[0] in ("stouffer", "mahalanobis"):
        return f"{parts[0]} > {parts[1]}"
    methods = parts[1].split(",")
    named = "all 5" if len(methods) == 5 else "+".join(SHORT.get(m, m) for m in methods)
    return f"threshold {parts[0]}, {parts[2]} of {named}"


def _setting(key: str) -> tuple[list[str], int]:
    _, methods, k = key.split("|")
    return methods.split(","), int(k)


def _records(results: Mapping[str, Any], which: str) -> list[Mapping[str, Any]]:
    """The records of the shipped defaults ("shipped") or of the setting tuned on half ("tuned")."""
    return results["records"] if which == "shipped" else results["tuned_records"]


def _key(results: Mapping[str, Any], which: str) -> str:
    return results["default_key"] if which == "shipped" else results["chosen_key"]


def _cell_label(kind: str, strength: str, fraction: float) -> str:
    return f"{kind} {strength}" + (f" {fraction:g}" if kind == "shuffle" else " 8 h")


def _cells(results: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    keys = {(r["kind"], r["strength"], r["fraction"]) for r in results["records"] if r["planted"]}
    order = {"strong": 0, "medium": 1, "weak": 2}
    return sorted(keys, key=lambda k: (k[0] != "shuffle", order.get(k[1], 9), k[2]))


def _select(rows: Sequence[Mapping[str, Any]], **where: Any) -> list[Mapping[str, Any]]:
    return [r for r in rows if all(r.get(name) == value for name, value in where.items())]


def kth_largest(values: Iterable[float], k: int) -> float:
    ordered = sorted(values, reverse=True)
    return ordered[min(k, len(ordered)) - 1] if ordered else 0.0


def exceeds_stated(
    record: Mapping[str, Any], effects: Mapping[str, Any], methods: Sequence[str], k: int
) -> bool | None:
    """Whether the plant's true plain change (the k-th largest over the verdict methods, per
    column) exceeds the detectable change the scenario's report stated for that column; None when
    no statement covers the planted columns."""
    stated_any = False
    for column in record["columns"]:
        stated = record["detectable"].get(column)
        per_method = effects["per_column"].get(column, {})
        plains = [
            per_method[m]["plain"] for m in methods if m in per_method and per_method[m]["plain"] is not None
        ]
        if stated is None or not plains:
            continue
        stated_any = True
        rise, fall = stated
        true_rise = kth_largest(plains, k)
        true_fall = kth_largest([-p for p in plains], k)
        if (rise is not None and true_rise >= rise) or (fall is not None and true_fall >= fall):
            return True
    return False if stated_any else None


# --------------------------------------------------------------------------- sections


def header(results: Mapping[str, Any]) -> list[str]:
    m = results["machine"]
    s = results["seconds"]
    r2 = results["eval_r2"]
    run = (
        f"Run of {results['finished']}: {results['n_models']} models (built and audited, or read from the "
        f"cache), {len(results['records'])} judged scenarios; {m['cores']} cores ({m['cpu']}), load average "
        f"{m['load_average'][0]:.1f} at the end; {s['total'] / 60:.1f} min in all"
    )
    times = f"{s['build'] / 60:.1f} min building or reading drops, {s['judging'] / 60:.1f} min judging"
    tune = ", ".join(results["tune_groups"])
    return [
        f"{run} ({times}). Eval R² of the clean models: median {r2['median']:.3f} [{r2['min']:.3f} to "
        f"{r2['max']:.3f}]. Settings tuned on {tune}; every table scores the other two groups unless it "
        "says otherwise.",
        "",
    ]


def variables_section(results: Mapping[str, Any]) -> list[str]:
    rows = []
    for group in results["groups"]:
        shares = {p["feature"]: p["loss_share"] for p in results["profiles"][group]}
        chosen = results["variables"][group]
        rows.append(
            [
                group,
                "tune" if group in results["tune_groups"] else "score",
                *(f"{chosen[s]} ({100 * shares[chosen[s]]:.1f}%)" for s in ("strong", "medium", "weak")),
            ]
        )
    return [
        "### Planted variables (share of the permutation importance over the group's history)",
        "",
        *table(["group", "half", "strong", "medium", "weak"], rows),
    ]


def defaults_section(results: Mapping[str, Any]) -> list[str]:
    tune, score = results["sweep_tune"], results["sweep_score"]
    tune3, score3 = results["sweep_tune_3"], results["sweep_score_3"]
    allowed = [
        k for k, v in tune.items() if v["false_alarm"] <= FALSE_ALARMS and k.split("|")[0][0].isdigit()
    ]
    best = sorted(allowed, key=lambda k: (-tune[k]["detection"], -tune[k]["right"]))[:8]
    keys = list(dict.fromkeys([results["chosen_key"], results["default_key"], *best]))

    def cells(rates: Mapping[str, Any], key: str) -> list[str]:
        v = rates.get(key)
        if v is None:
            return ["—", "—", "—"]
        return [
            frac(round(v["false_alarm"] * v["n_clean"]), v["n_clean"]),
            frac(round(v["detection"] * v["n_planted"]), v["n_planted"]),
            frac(round(v["right"] * v["n_planted"]), v["n_planted"]),
        ]

    rows = []
    for key in keys:
        mark = (
            " (chosen)"
            if key == results["chosen_key"]
            else (" (old default)" if key == results["default_key"] else "")
        )
        rows.append([key_text(key) + mark, *cells(tune, key), *cells(score, key), *cells(score3, key)[:2]])
    thresholds = ", ".join(sorted({k.split("|")[0] for k in tune if k[0].isdigit()}, key=float))
    lines = [
        "### Choosing the defaults (single models; verdict methods, threshold, agreement)",
        "",
        f"Every threshold ({thresholds}), every non-empty set of the five data methods as verdict methods "
        "and 1 to 3 agreeing methods were judged; the setting chosen on the tuning groups is the one with "
        f"the most detections among those with at most {FALSE_ALARMS:.0%} false alarms there. The best "
        "settings on the tuning groups, then the same settings on the scoring groups:",
        "",
        *table(
            [
                "setting",
                "tune: false alarms",
                "tune: detection",
                "tune: right feature",
                "score: false alarms",
                "score: detection",
                "score: right feature",
                "score, 3 models: false alarms",
                "score, 3 models: detection",
            ],
            rows,
        ),
    ]
    del tune3
    return lines


def _power_rows(
    results: Mapping[str, Any], which: str | None, setting: str = "shipped"
) -> list[dict[str, Any]]:
    records = _records(results, setting)
    oracle = results["oracle"]
    rows = []
    for kind, strength, fraction in _cells(results):
        where = {"kind": kind, "strength": strength, "fraction": fraction, "planted": True}
        if which:
            where["half"] = which
        single = _select(records, models=1, **where)
        triple = [r for r in _select(records, **where) if r["models"] > 1]
        oracles = _select(oracle, **where)
        ndcg = [r for r in single if "ndcg_alert" in r]
        groups = sorted({r["group"] for r in single})
        effects = [results["effects"][f"{g}|{kind}|{strength}|{fraction:g}"]["effect"] for g in groups]
        rows.append(
            {
                "label": _cell_label(kind, strength, fraction),
                "effect": statistics.median(effects) if effects else math.nan,
                "effects": effects,
                "tool": (sum(r["alert"] for r in single), len(single)),
                "tool_right": (sum(r["right_feature"] for r in single), len(single)),
                "tool3": (sum(r["alert"] for r in triple), len(triple)),
                "oracle": (sum(r["alert"] for r in oracles), len(oracles)),
                "oracle_right": (sum(r["right_feature"] for r in oracles), len(oracles)),
                "told": (sum(r["told_alert"] for r in oracles), len(oracles)),
                "ndcg": (sum(r["ndcg_alert"] for r in ndcg), len(ndcg)),
            }
        )
    return rows


def _false_alarm_row(results: Mapping[str, Any], which: str | None) -> list[str]:
    """The same columns on the reseed-only scenarios: each rule's false alarms."""
    where = {"planted": False} if which is None else {"planted": False, "half": which}
    single = _select(results["records"], models=1, **where)
    triple = [r for r in _select(results["records"], **where) if r["models"] > 1]
    oracles = _select(results["oracle"], **where)
    return [
        "reseed-only (false alarms)",
        "0",
        frac(sum(r["alert"] for r in single), len(single)),
        "—",
        frac(sum(r["alert"] for r in triple), len(triple)),
        frac(sum(r["alert"] for r in oracles), len(oracles)),
        "—",
        frac(sum(r["ndcg_alert"] for r in single), len(single)),
        "—",
    ]


def power_section(results: Mapping[str, Any], which: str | None, title: str) -> list[str]:
    rows = [_false_alarm_row(results, which)]
    for row in _power_rows(results, which):
        tool, oracle = row["tool"], row["oracle"]
        target = "—"
        if oracle[1] and oracle[0] / oracle[1] >= ORACLE_CELL:
            ratio = (tool[0] / tool[1]) / (oracle[0] / oracle[1]) if tool[1] else 0.0
            target = f"{ratio:.0%} {verdict(ratio >= CELL_RATIO)}"
        rows.append(
            [
                row["label"],
                ", ".join(f"{e:.1f}" for e in row["effects"]),
                frac(*tool),
                frac(*row["tool_right"]),
                frac(*row["tool3"]),
                frac(*oracle),
                frac(*row["told"]),
                frac(*row["ndcg"]),
                target,
            ]
        )
    return [
        title,
        "",
        *table(
            [
                "cell",
                "true effect per group (noise units)",
                "tool, 1 model",
                "tool: right feature",
                "tool, 3 models",
                "oracle",
                "oracle told the variable",
                "nDCG < 0.90",
                "tool / oracle where oracle >= 80% (target >= 90%)",
            ],
            rows,
        ),
    ]


def honesty(
    results: Mapping[str, Any], setting: str, which: str = "score", models: int = 1
) -> dict[str, Any]:
    methods, k = _setting(_key(results, setting))
    exceeding, detected, misses, unstated = 0, 0, [], 0
    for record in _records(results, setting):
        if not record["planted"] or record["half"] != which or record["models"] != models:
            continue
        key = f"{record['group']}|{record['kind']}|{record['strength']}|{record['fraction']:g}"
        exceeds = exceeds_stated(record, results["effects"][key], methods, k)
        if exceeds is None:
            unstated += 1
        elif exceeds:
            exceeding += 1
            detected += record["alert"]
            if not record["alert"]:
                misses.append(record["scenario"])
    return {"exceeding": exceeding, "detected": detected, "misses": misses, "unstated": unstated}


def _targets(results: Mapping[str, Any], setting: str) -> tuple[list[str], list[str]]:
    """(measured cells, misses) of every target for one setting on the scoring groups."""
    records = _select(_records(results, setting), half="score")
    clean1 = _select(records, planted=False, models=1)
    clean3 = [r for r in records if not r["planted"] and r["models"] > 1]
    planted1 = _select(records, planted=True, models=1)
    alerts = [r for r in planted1 if r["alert"]]
    fa1 = sum(r["alert"] for r in clean1)
    fa3 = sum(r["alert"] for r in clean3)
    rows = [
        r
        for r in _power_rows(results, "score", setting)
        if r["oracle"][1] and r["oracle"][0] / r["oracle"][1] >= ORACLE_CELL
    ]
    ratios = [
        (row["label"], (row["tool"][0] / row["tool"][1]) / (row["oracle"][0] / row["oracle"][1]))
        for row in rows
    ]
    honest, honest3 = honesty(results, setting), honesty(results, setting, models=3)
    right = sum(r["right_feature"] for r in alerts)
    cells = [
        f"{frac(fa1, len(clean1))} {verdict(fa1 <= FALSE_ALARMS * len(clean1) and len(clean1) >= 48)}",
        frac(fa3, len(clean3)),
        ", ".join(f"{label} {ratio:.0%}" for label, ratio in ratios)
        + f" {verdict(all(ratio >= CELL_RATIO for _, ratio in ratios))}",
        f"{frac(honest['detected'], honest['exceeding'])} "
        f"{verdict(honest['exceeding'] > 0 and honest['detected'] >= HONEST * honest['exceeding'])}",
        frac(honest3["detected"], honest3["exceeding"]),
        f"{frac(right, len(alerts))} {verdict(bool(alerts) and right >= NAMING * len(alerts))}",
    ]
    return cells, honest["misses"]


def targets_section(results: Mapping[str, Any]) -> list[str]:
    shipped, misses = _targets(results, "shipped")
    tuned, _ = _targets(results, "tuned")
    labels = [
        "false alarms on reseed-only scenarios, single models (target <= 5% on >= 48)",
        "false alarms, drops of 3 models",
        "cells where the oracle detects >= 80%: the tool detects >= 90% of what it does",
        "detection among plants whose true change exceeds the stated detectable change (target >= 95%)",
        "... drops of 3 models",
        "right feature named first, among detections on single models (target >= 95%)",
    ]
    rows = [[label, a, b] for label, a, b in zip(labels, shipped, tuned, strict=True)]
    lines = [
        "### Targets, out of sample (the two scoring groups)",
        "",
        *table(
            [
                "target",
                f"shipped defaults ({key_text(results['default_key'])})",
                f"setting tuned on the other half ({key_text(results['chosen_key'])})",
            ],
            rows,
        ),
    ]
    if misses:
        lines += [
            "Shipped defaults: plants whose true change exceeded the stated detectable change but did not "
            "alert: " + ", ".join(f"`{name}`" for name in misses),
            "",
        ]
    return lines


def alternative_section(results: Mapping[str, Any]) -> list[str]:
    tune, score = results["sweep_tune"], results["sweep_score"]
    rows = []
    for key in (results["default_key"], results["chosen_key"], *results["alternatives"].values()):
        t, s = tune[key], score[key]
        rows.append(
            [
                key_text(key),
                frac(round(t["false_alarm"] * t["n_clean"]), t["n_clean"]),
                frac(round(t["detection"] * t["n_planted"]), t["n_planted"]),
                frac(round(s["false_alarm"] * s["n_clean"]), s["n_clean"]),
                frac(round(s["detection"] * s["n_planted"]), s["n_planted"]),
                frac(round(s["right"] * s["n_planted"]), s["n_planted"]),
            ]
        )
    return [
        "### Another combination: the methods' z-scores allowing for their correlation",
        "",
        "Per feature, the verdict methods' z (change / band scale) combined with the correlation of "
        "the methods' past changes R (from the scenario's own history): Stouffer's sum / sqrt(1'R1), "
        "or the Mahalanobis z'R⁻¹z; an alert when the largest over features exceeds a threshold "
        "chosen on the tuning groups (the most detections at <= 5% false alarms). Single models:",
        "",
        *table(
            [
                "rule",
                "tune: false alarms",
                "tune: detection",
                "score: false alarms",
                "score: detection",
                "score: right feature",
            ],
            rows,
        ),
    ]


def cold_section(results: Mapping[str, Any]) -> list[str]:
    rows = []
    for fraction in sorted({f for r in results["cold"] for f in r["by_fraction"]}, key=float):
        cells = []
        for which in ("tune", "score"):
            clean = [
                r["by_fraction"][fraction] for r in results["cold"] if r["half"] == which and not r["planted"]
            ]
            planted = [
                r["by_fraction"][fraction] for r in results["cold"] if r["half"] == which and r["planted"]
            ]
            cells += [
                frac(sum(c["alert"] for c in clean), len(clean)),
                frac(sum(c["warn"] for c in clean), len(clean)),
                frac(sum(c["alert"] for c in planted), len(planted)),
            ]
        rows.append([fraction, *cells])
    quantiles = []
    for which in ("tune", "score"):
        values = results["profile_distances"][which]
        if values:
            qs = [values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.9, 0.99)]
            quantiles.append(
                f"{which}: median {qs[0]:.2f}, 90% {qs[1]:.2f}, 99% {qs[2]:.2f} steps (n = {len(values)})"
            )
    return [
        "### Time-profile band at cold start (single models, only the previous drop)",
        "",
        "With no history and no copies the profile band is `default_profile_fraction` x the 24 steps. "
        "Profile distances between consecutive clean models (judged features, verdict methods): "
        + "; ".join(quantiles)
        + ".",
        "",
        *table(
            [
                "default_profile_fraction",
                "tune: false alarms",
                "tune: warn on reseeds",
                "tune: detection",
                "score: false alarms",
                "score: warn on reseeds",
                "score: detection",
            ],
            rows,
        ),
    ]


def statements_section(results: Mapping[str, Any]) -> list[str]:
    """What the reports stated they could see, on the scoring groups' reseed-only single models."""
    by_feature: dict[str, list[tuple[float | None, float | None]]] = {}
    n_records = 0
    for record in _select(results["records"], half="score", planted=False, models=1):
        n_records += 1
        for feature, stated in record["detectable"].items():
            if stated is not None:
                by_feature.setdefault(feature, []).append((stated[0], stated[1]))
    rows = []
    for feature, pairs in sorted(by_feature.items(), key=lambda item: -len(item[1])):
        rises = [r for r, _ in pairs if r is not None]
        falls = [f for _, f in pairs if f is not None]
        rows.append(
            [
                feature,
                f"{len(pairs)} of {n_records}",
                f"{statistics.median(rises):.0%}" if rises else "never",
                f"{len(pairs) - len(rises)}",
                f"{statistics.median(falls):.0%}" if falls else "never",
                f"{len(pairs) - len(falls)}",
            ]
        )
    advice = [
        r["advice"]
        for r in _select(results["records"], half="score", planted=False, models=3)
        if r.get("advice")
    ]
    lines = [
        "### What the reports stated they could see (scoring groups, reseed-only, single models)",
        "",
        *table(
            [
                "feature",
                "judged in",
                "median detectable rise",
                "no rise of any size",
                "median detectable fall",
                "no fall of any size",
            ],
            rows,
        ),
    ]
    if advice:
        lines += ["Copies advice of one report on a drop of 3 models: " + advice[0], ""]
    return lines


def render(results: Mapping[str, Any]) -> str:
    lines = [
        *header(results),
        *variables_section(results),
        *targets_section(results),
        *power_section(results, "score", "### Power by cell, scoring groups (pooled; effect per group)"),
        *power_section(results, None, "### Power by cell, all four groups (the tuning groups in sample)"),
        "![power against true effect](drift-power.png)",
        "",
        *defaults_section(results),
        *alternative_section(results),
        *statements_section(results),
        *cold_section(results),
    ]
    return "\n".join(lines).rstrip() + "\n"


#: Bins of the true effect (noise units) the power curves pool cells into.
EFFECT_BINS: tuple[tuple[float, float], ...] = (
    (0.0, 1.0),
    (1.0, 2.0),
    (2.0, 5.0),
    (5.0, 10.0),
    (10.0, math.inf),
)


def power_curves(results: Mapping[str, Any]) -> dict[str, list[tuple[float, float, int]]]:
    """Per rule: (median effect, share detected, scenarios) of the planted scenarios pooled over the
    cells (of every group) whose true effect falls in each of `EFFECT_BINS`."""
    rows = []
    for group in results["groups"]:
        narrowed = {
            **results,
            "records": _select(results["records"], group=group),
            "oracle": _select(results["oracle"], group=group),
        }
        rows += _power_rows(narrowed, None)
    curves: dict[str, list[tuple[float, float, int]]] = {}
    for key in ("tool", "tool3", "oracle", "ndcg"):
        points = []
        for low, high in EFFECT_BINS:
            inside = [r for r in rows if low <= r["effect"] < high and r[key][1]]
            hits = sum(r[key][0] for r in inside)
            total = sum(r[key][1] for r in inside)
            if total:
                points.append((statistics.median(r["effect"] for r in inside), hits / total, total))
        curves[key] = points
    return curves


def plot(results: Mapping[str, Any], path: Path) -> None:
    """Power against true effect: the tool with 1 and 3 models per drop, the oracle and nDCG < 0.90,
    pooled over the four groups' cells in bins of effect (matplotlib's object API, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.4), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    styles = {
        "tool": ("this tool, 1 model per drop", "o", "#1f5fa8", "-"),
        "tool3": ("this tool, 3 models per drop", "s", "#1a7f37", "-"),
        "oracle": ("oracle (knows the null, 1 model)", "^", "#444444", "--"),
        "ndcg": ("nDCG < 0.90 (SageMaker Clarify)", "x", "#b42318", ":"),
    }
    for key, points in power_curves(results).items():
        label, marker, colour, line = styles[key]
        axes.plot(
            [p[0] for p in points], [p[1] for p in points], marker=marker, color=colour, ls=line, label=label
        )
    axes.set_xscale("log")
    axes.set_xlabel("true effect of the plant (noise units of a single-model change, best method)")
    axes.set_ylabel("share of planted scenarios detected")
    axes.set_ylim(-0.03, 1.03)
    axes.axhline(0.05, color="#999999", lw=0.8, ls=":")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    bins = ", ".join(f"{low:g}-{high:g}" if math.isfinite(high) else f">{low:g}" for low, high in EFFECT_BINS)
    axes.set_title(f"Power against true effect (cells pooled in bins {bins})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def replace_block(path: Path, text: str) -> None:
    content = path.read_text(encoding="utf-8")
    start, end = content.index(START) + len(START), content.index(END)
    path.write_text(content[:start] + "\n" + text + content[end:], encoding="utf-8")
