"""Markdown tables of the drift benchmark from its JSON results (no TensorFlow: runs in a second).

The block between ``<!-- drift:results:start -->`` and ``<!-- drift:results:end -->`` in
docs/drift-benchmark.md is replaced by `render` with ``bench/drift/run.py --docs``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

START, END = "<!-- drift:results:start -->", "<!-- drift:results:end -->"
TARGETS = {"false_alarm": 0.05, "detection": 0.95, "right_feature": 0.95}


def rate_text(rate: Mapping[str, Any] | None) -> str:
    if not rate or not rate["total"]:
        return "—"
    return f"{rate['hits']}/{rate['total']} ({100 * rate['hits'] / rate['total']:.0f}%)"


def passes(rate: Mapping[str, Any] | None, target: str) -> str:
    if not rate or not rate["total"]:
        return "—"
    value = rate["hits"] / rate["total"]
    ok = value <= TARGETS[target] if target == "false_alarm" else value >= TARGETS[target]
    return "**PASS**" if ok else "**MISS**"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows)]


def headline(results: Mapping[str, Any]) -> list[str]:
    rates = results["rates"]["full"]
    tool, any_, perm = rates["tool"], rates["ndcg_any"], rates["ndcg_permutation"]
    rows = [
        [
            "false alarms on reseed-only scenarios (target <= 5%)",
            f"{rate_text(tool['false_alarm'])} {passes(tool['false_alarm'], 'false_alarm')}",
            f"{rate_text(any_['false_alarm'])} {passes(any_['false_alarm'], 'false_alarm')}",
            f"{rate_text(perm['false_alarm'])} {passes(perm['false_alarm'], 'false_alarm')}",
        ],
        [
            "detection on planted scenarios (target >= 95%)",
            f"{rate_text(tool['detection'])} {passes(tool['detection'], 'detection')}",
            f"{rate_text(any_['detection'])} {passes(any_['detection'], 'detection')}",
            f"{rate_text(perm['detection'])} {passes(perm['detection'], 'detection')}",
        ],
        [
            "right feature named first (target >= 95%)",
            f"{rate_text(tool['right_feature'])} {passes(tool['right_feature'], 'right_feature')}",
            "names no feature",
            "names no feature",
        ],
        ["warn on reseed-only scenarios", rate_text(tool["warn_on_reseed"]), "—", "—"],
        ["warn (not alert) on planted scenarios", rate_text(tool["warn_on_planted"]), "—", "—"],
    ]
    n_earlier = results["design"]["n_history"]
    return [
        f"### Both rules, {n_earlier} earlier drops ({n_earlier - 1} past week-to-week changes)",
        "",
        *table(
            [
                "",
                "this tool: `assess_drift` verdict alert",
                "SageMaker: nDCG < 0.90 in any verdict method",
                "nDCG < 0.90 in permutation",
            ],
            rows,
        ),
        "",
    ]


def breakdown_section(results: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            *_breakdown_cells(row),
            rate_text(row["ndcg_any_detection"]),
            rate_text(row["ndcg_permutation_detection"]),
        ]
        for row in results["breakdown"]
    ]
    header = [
        "planted",
        "feature",
        "features",
        "tool: alert",
        "tool: right feature",
        "tool: warn only",
        "nDCG any",
        "nDCG permutation",
    ]
    return ["### Planted scenarios by kind and feature strength", "", *table(header, rows), ""]


def cold_start_section(results: Mapping[str, Any]) -> list[str]:
    rows = []
    for label, rates in results["rates"].items():
        tool = rates["tool"]
        rows.append(
            [
                label if label != "full" else f"{results['design']['n_history']} (full)",
                rate_text(tool["false_alarm"]),
                rate_text(tool["warn_on_reseed"]),
                rate_text(tool["detection"]),
                rate_text(tool["right_feature"]),
                rate_text(rates["ndcg_any"]["false_alarm"]),
                rate_text(rates["ndcg_any"]["detection"]),
            ]
        )
    header = [
        "earlier drops",
        "tool: false alarms",
        "tool: warn on reseeds",
        "tool: detection",
        "tool: right feature",
        "nDCG any: false alarms",
        "nDCG any: detection",
    ]
    return [
        "### Cold start: the same test drops judged after only the last 1, 2 or 3 earlier drops",
        "",
        *table(header, rows),
        "",
    ]


def frozen_section(results: Mapping[str, Any]) -> list[str]:
    frozen = results.get("frozen")
    if not frozen:
        return []
    rows = [
        [kind, ", ".join(f"{cause}: {count}" for cause, count in sorted(causes.items())) or "—"]
        for kind, causes in frozen["causes"].items()
    ]
    return [
        "### Frozen set (previous model scored on the test drop's eval sample)",
        "",
        f"Verdicts with the frozen set equal those without it in {frozen['same_verdicts']} of "
        f"{frozen['n']} scenarios (the rule uses it to name a cause, not to decide). Cause named for "
        "the first feature of planted alerts:",
        "",
        *table(["planted kind", "causes"], rows),
        "",
    ]


def diagnostics_section(results: Mapping[str, Any]) -> list[str]:
    diag = results["diagnostics"]
    lines = [
        "### Diagnostics: evidence (|change| / band half-width; > 1 = the method flags it)",
        "",
        "Per method, over scenarios with the full history: the largest evidence of any feature in "
        "reseed-only scenarios, and the planted feature's evidence in planted ones (median [min-max]).",
        "",
    ]
    rows = []
    for method, entry in diag["by_method"].items():
        rows.append(
            [
                method,
                entry["reseed_max_evidence"],
                entry["reseed_flag_rate"],
                entry["planted_evidence"],
                entry["planted_flag_rate"],
            ]
        )
    lines += table(
        [
            "method",
            "reseeds: largest evidence",
            "reseeds: scenarios with a flag",
            "planted feature: evidence",
            "planted feature flagged",
        ],
        rows,
    )
    lines.append("")
    lines += [
        "",
        'A feature is "changed" when its evidence in its k-th strongest method exceeds 1 (k = '
        "`min_agreeing_methods`). That k-th evidence and the k-th largest value |z| (change / noise "
        "scale, threshold-free), median [min-max]:",
        "",
    ]
    lines += table(
        ["scenarios: feature", "n", "k-th evidence", "k-th |z|"],
        [[label, str(entry["n"]), entry["evidence"], entry["z"]] for label, entry in diag["kth"].items()],
    )
    lines.append("")
    if diag["false_alarms"]:
        lines += ["False alarms (reseed-only scenarios, full history):", ""]
        lines += [f"- `{item['scenario']}`: {item['reason']}" for item in diag["false_alarms"]]
        lines.append("")
    if diag["misses"]:
        lines += ["Planted scenarios without an alert naming the planted feature first (full history):", ""]
        lines += [
            f"- `{item['scenario']}` ({item['strength']}): verdict {item['verdict']}, first named "
            f"{item['first_feature']}; planted feature flagged by {item['agreement']} of "
            f"{item['n_methods']} methods, evidence {item['evidence']}"
            for item in diag["misses"]
        ]
        lines.append("")
    return lines


def sweep_section(results: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            str(row.get("models", 1)),
            f"{row['threshold']:g}",
            str(row["min_agreeing"]),
            f"{row.get('epsilon_fraction', 0.01):g}",
            rate_text(row["false_alarm"]),
            rate_text(row["warn_on_reseed"]),
            rate_text(row["detection"]),
            rate_text(row["right_feature"]),
        ]
        for row in results.get("sweep", [])
    ]
    if not rows:
        return []
    return [
        "### Exploration: the rule at other settings (full history; the headline uses the defaults)",
        "",
        *table(
            [
                "models per drop",
                "threshold",
                "min agreeing methods",
                "epsilon fraction",
                "false alarms",
                "warn on reseeds",
                "detection",
                "right feature",
            ],
            rows,
        ),
        "",
    ]


def setup_section(results: Mapping[str, Any]) -> list[str]:
    design = results["design"]
    settings = design["settings"]
    machine = results["machine"]
    planted = results["planted"]
    seconds = results["seconds"]
    rows = [
        [
            group,
            info["strong"],
            ", ".join(info["weak"]) or "—",
            ", ".join(
                f"{p['feature']} {100 * p['share']:.1f}% (cv {p['cv']:.2f}; "
                f"permutation {100 * p.get('loss_share', 0.0):.1f}%)"
                for p in results["profiles"][group]
                if p["feature"] in (info["strong"], *info["weak"])
            ),
        ]
        for group, info in planted.items()
    ]
    r2 = results["eval_r2"]
    return [
        f"Run of {results['finished']}: {results['counts']['drops']} models trained and audited"
        + (
            f" ({results['counts']['drops'] // (1 + design['copies'])} drops of 1 + {design['copies']} "
            "reseeded copies)"
            if design.get("copies")
            else ""
        )
        + f", {results['design']['workers']} processes; "
        f"{results['counts']['reseed']} reseed-only and {results['counts']['planted']} planted scenarios; "
        f"{machine['cores']} cores ({machine['cpu']}), "
        f"load average {machine['load_average'][0]:.1f} at the end; "
        f"**{seconds['total'] / 60:.1f} min** in all ({seconds['build_and_audit'] / 60:.1f} min training and "
        f"auditing drops, {seconds['frozen_audits'] / 60:.1f} min frozen-set audits, "
        f"{seconds['judging']:.0f} s judging). Models: GRU({settings['units']}) -> Dense(1), "
        f"{settings['epochs']} epochs on {results['n_train']} windows, eval samples of {settings['n_eval']} "
        f"windows; eval R^2 median {r2['median']:.3f} [{r2['min']:.3f}-{r2['max']:.3f}]. Drift config: "
        f"`{results['drift_config']}`.",
        "",
        "Planted features per group, chosen from the group's history drops (median share of the "
        "importance over the five methods, its coefficient of variation over the history, and the "
        "share of permutation importance alone, the part of the loss the model owes the feature):",
        "",
        *table(["group", "strong", "weak", "shares in the history"], rows),
        "",
    ]


def copies_section(results: Mapping[str, Any]) -> list[str]:
    """The same scenarios with every drop holding reseeded copies: the rule judges their means."""
    lines: list[str] = []
    single = results["rates"]["full"]["tool"]
    n_history = results["design"]["n_history"]
    for models, entry in results.get("by_models", {}).items():
        rows = [["1 (single models)", f"{n_history} (full)", *_tool_cells(single)]]
        for label, rates in entry["rates"].items():
            earlier = f"{n_history} (full)" if label == "full" else label
            rows.append([models, earlier, *_tool_cells(rates["tool"])])
        lines += [
            f"### Drops of {models} reseeded models: the rule judges the mean of each drop's models",
            "",
            f"Every drop, history and test drop alike, also holds {int(models) - 1} reseeded copies "
            "(same data and eval sample, other training seeds), as a team that drops "
            "`model_seed*.keras` files has; `assess_drift` then compares the means of the models "
            "(`audit.drift.drop_figure`). nDCG is unchanged (SageMaker computes it on one model).",
            "",
            *table(
                [
                    "models per drop",
                    "earlier drops",
                    "false alarms (target <= 5%)",
                    "warn on reseeds",
                    "detection (target >= 95%)",
                    "right feature (target >= 95%)",
                ],
                rows,
            ),
            "",
            *table(
                ["planted", "feature", "features", "tool: alert", "tool: right feature", "tool: warn only"],
                [_breakdown_cells(row) for row in entry["breakdown"]],
            ),
            "",
            "k-th evidence and k-th |z| (as in the diagnostics below, for single models), median [min-max]:",
            "",
            *table(
                ["scenarios: feature", "n", "k-th evidence", "k-th |z|"],
                [
                    [label, str(kth["n"]), kth["evidence"], kth["z"]]
                    for label, kth in entry["diagnostics"]["kth"].items()
                ],
            ),
            "",
        ]
    return lines


def _breakdown_cells(row: Mapping[str, Any]) -> list[str]:
    """Planted kind, strength, variables and the tool's rates of one breakdown row."""
    return [
        row["kind"],
        row["strength"],
        ", ".join(row["features"]),
        rate_text(row["tool_detection"]),
        rate_text(row["tool_right_feature"]),
        rate_text(row["tool_warn"]),
    ]


def _tool_cells(tool: Mapping[str, Any]) -> list[str]:
    return [
        f"{rate_text(tool['false_alarm'])} {passes(tool['false_alarm'], 'false_alarm')}",
        rate_text(tool["warn_on_reseed"]),
        f"{rate_text(tool['detection'])} {passes(tool['detection'], 'detection')}",
        f"{rate_text(tool['right_feature'])} {passes(tool['right_feature'], 'right_feature')}",
    ]


def render(results: Mapping[str, Any]) -> str:
    lines = [
        *setup_section(results),
        *headline(results),
        *breakdown_section(results),
        *copies_section(results),
        *cold_start_section(results),
        *frozen_section(results),
        *diagnostics_section(results),
        *sweep_section(results),
    ]
    return "\n".join(lines).rstrip() + "\n"


def replace_block(path: Path, text: str) -> None:
    docs = path.read_text(encoding="utf-8")
    if START not in docs or END not in docs:
        raise SystemExit(f"{path} has no {START} ... {END} block")
    before, rest = docs.split(START, 1)
    after = rest.split(END, 1)[1]
    path.write_text(f"{before}{START}\n{text}{END}{after}", encoding="utf-8")


def spread(values: Sequence[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"
