"""Drift benchmark (issue 5): does the drift rule tell planted changes from retraining noise?

Trains small next-hour PM2.5 forecasters on the real Beijing data in groups of reseeded drops,
plants changes (a feature shuffled between training windows, or a feature's feed lagged), audits
every drop with the project's methods and judges each scenario with `audit.drift.assess_drift`
and with SageMaker Clarify's nDCG < 0.90 rule. See docs/drift-benchmark.md.

    .venv/bin/python bench/drift/run.py            # ~16 min the first time, ~1.5 min from the cache
    .venv/bin/python bench/drift/run.py --docs     # ... and refresh docs/drift-benchmark.md
    .venv/bin/python bench/drift/run.py --threshold 3 --min-agreeing 3   # explore the rule's settings

Writes bench/results/drift/results.json and results.md; drops and audits are cached under
.cache/drift-benchmark/ (``--fresh`` retrains and re-audits everything).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from bench.drift import report
from bench.drift.drops import CACHE, METHOD_OPTIONS, METHODS, REPO, RESULTS, ModelSettings
from bench.drift.scenarios import (
    DEFAULT_GROUPS,
    Built,
    Design,
    breakdown,
    build,
    jsonable,
    judge,
    judge_all,
    rule_rates,
    select,
)

DOCS = REPO / "docs" / "drift-benchmark.md"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Drift benchmark of issue 5 on the Beijing PM2.5 data (see docs/drift-benchmark.md).",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="retrain and re-audit every drop (ignore the cache)"
    )
    parser.add_argument(
        "--docs", action="store_true", help="replace the results block of docs/drift-benchmark.md"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (%(default)s)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="trained drops and audits (%(default)s)")
    parser.add_argument(
        "--groups", type=int, default=len(DEFAULT_GROUPS), help="use the first N data groups (%(default)s)"
    )
    parser.add_argument("--history", type=int, default=Design.n_history, help="history drops per group")
    parser.add_argument(
        "--reseeds", type=int, default=Design.n_reseeds, help="reseed-only test drops per group"
    )
    parser.add_argument("--weak", type=int, default=Design.n_weak, help="weak planted features per group")
    parser.add_argument("--no-frozen", action="store_true", help="skip the frozen-set audits")
    parser.add_argument(
        "--copies",
        type=int,
        default=2,
        help="reseeded copies per drop (%(default)s); scenarios are also judged on the means of 1 + N models",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="processes training and auditing drops (%(default)s)"
    )
    drift = parser.add_argument_group("drift rule settings (DriftConfig; defaults: the rule's own)")
    drift.add_argument("--threshold", type=float, help="band half-width in noise scales")
    drift.add_argument("--min-agreeing", type=int, help="methods that must flag a feature")
    drift.add_argument("--min-history", type=int, help="past changes before a feature's own band is used")
    drift.add_argument("--pooled-weight", type=float, help="observations the pooled scale counts for")
    drift.add_argument(
        "--epsilon-fraction", type=float, help="value floor as a share of the total importance"
    )
    parser.add_argument(
        "--sweep-thresholds",
        default="3,4,5,6",
        help="thresholds of the exploration table, comma-separated ('' for none; default %(default)s)",
    )
    parser.add_argument(
        "--sweep-agreeing",
        default="1,2,3",
        help="min_agreeing_methods values of the exploration table (default %(default)s)",
    )
    parser.add_argument(
        "--sweep-epsilon",
        default="0.01",
        help="epsilon_fraction values of the exploration table (default %(default)s)",
    )
    parser.add_argument(
        "--output-name", default="results", help="name of the JSON/markdown outputs (%(default)s.json)"
    )
    return parser.parse_args(argv)


def drift_config(args: argparse.Namespace) -> Any:
    from audit.types import DriftConfig

    overrides = {
        name: value
        for name, value in (
            ("threshold", args.threshold),
            ("min_agreeing_methods", args.min_agreeing),
            ("min_history", args.min_history),
            ("pooled_weight", args.pooled_weight),
            ("epsilon_fraction", args.epsilon_fraction),
        )
        if value is not None
    }
    return DriftConfig(**overrides)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import keras
    import tensorflow as tf

    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "load_average": list(os.getloadavg()),
    }


def diagnostics(records: Sequence[Mapping[str, Any]], *, models: int = 1) -> dict[str, Any]:
    reseeds = select(records, planted=False, models=models)
    planted = select(records, planted=True, models=models)
    by_method: dict[str, Any] = {}
    for method in METHODS:
        reseed_evidence = [
            r["diagnostics"]["methods"][method]["max_other_evidence"]
            for r in reseeds
            if method in r["diagnostics"]["methods"]
        ]
        planted_entries = [r["diagnostics"]["methods"].get(method) for r in planted]
        planted_evidence = [
            e["planted_evidence"] for e in planted_entries if e and e["planted_evidence"] is not None
        ]
        n_flagged = sum(bool(e and e["planted_flagged"]) for e in planted_entries)
        by_method[method] = {
            "reseed_max_evidence": report.spread(reseed_evidence),
            "reseed_flag_rate": f"{sum(e > 1 for e in reseed_evidence)}/{len(reseed_evidence)}",
            "planted_evidence": report.spread(planted_evidence),
            "planted_flag_rate": f"{n_flagged}/{len(planted)}",
        }
    kth: dict[str, Any] = {}
    groups = {"reseed-only: largest other feature": [r["diagnostics"]["max_other_kth"] for r in reseeds]}
    for kind in sorted({r["kind"] for r in planted}):
        for strength in ("strong", "weak"):
            chosen = [r for r in planted if r["kind"] == kind and r["strength"] == strength]
            if chosen:
                groups[f"{kind} {strength}: planted feature"] = [
                    r["diagnostics"]["planted_kth"] for r in chosen
                ]
                groups[f"{kind} {strength}: largest other feature"] = [
                    r["diagnostics"]["max_other_kth"] for r in chosen
                ]
    for label, pairs in groups.items():
        found = [pair for pair in pairs if pair is not None]
        kth[label] = {
            "evidence": report.spread([pair[0] for pair in found]),
            "z": report.spread([pair[1] for pair in found]),
            "n": len(found),
        }
    false_alarms = [{"scenario": r["scenario"], "reason": r["reason"]} for r in reseeds if r["alert"]]
    misses = []
    for r in planted:
        if r["right_feature"]:
            continue
        methods = r["diagnostics"]["methods"]
        evidence = {
            m: e["planted_evidence"] for m, e in methods.items() if e.get("planted_evidence") is not None
        }
        misses.append(
            {
                "scenario": r["scenario"],
                "strength": r["strength"],
                "verdict": r["verdict"],
                "first_feature": r["first_feature"],
                "agreement": r["diagnostics"]["planted_agreement"],
                "n_methods": r["diagnostics"]["n_methods"],
                "evidence": ", ".join(f"{m} {v:.2f}" for m, v in evidence.items()),
                "z": {m: e.get("planted_z") for m, e in methods.items()},
                "max_other": {m: (e["max_other_feature"], e["max_other_z"]) for m, e in methods.items()},
                "reason": r["reason"],
            }
        )
    return {"by_method": by_method, "kth": kth, "false_alarms": false_alarms, "misses": misses}


def sweep(
    built: Built,
    config: Any,
    thresholds: Sequence[float],
    agreeing: Sequence[int],
    epsilons: Sequence[float],
) -> list[dict[str, Any]]:
    """The rule's rates at other settings (full history, no frozen set), on single models and, when
    the drops have copies, on the means of their models: exploration only."""
    rows = []
    with_copies = [False] + ([True] if any(s.test.copies for s in built.scenarios) else [])
    for copies in with_copies:
        for epsilon in epsilons:
            for k in agreeing:
                for threshold in thresholds:
                    varied = dataclasses.replace(
                        config, threshold=threshold, min_agreeing_methods=k, epsilon_fraction=epsilon
                    )
                    records = [judge(s, None, varied, with_copies=copies) for s in built.scenarios]
                    models = records[0]["models"] if records else 1
                    rates = rule_rates(records, models=models)["tool"]
                    rows.append(
                        {
                            "models": models,
                            "threshold": threshold,
                            "min_agreeing": k,
                            "epsilon_fraction": epsilon,
                            **rates,
                        }
                    )
    return rows


def frozen_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    with_frozen = select(records, frozen=True)
    if not with_frozen:
        return None
    plain = {r["scenario"]: r for r in select(records)}
    same = sum(plain[r["scenario"]]["verdict"] == r["verdict"] for r in with_frozen)
    causes: dict[str, Counter[str]] = {}
    for r in with_frozen:
        if r["planted"] and r["alert"]:
            causes.setdefault(r["kind"], Counter())[str(r["first_feature_cause"])] += 1
    return {"n": len(with_frozen), "same_verdicts": same, "causes": {k: dict(v) for k, v in causes.items()}}


def results_of(
    built: Built,
    records: list[dict[str, Any]],
    design: Design,
    config: Any,
    seconds: dict[str, float],
    sweep_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    rates = {"full": rule_rates(records)}
    for n in design.cold_starts:
        if select(records, n_earlier=n):
            rates[str(n)] = rule_rates(records, n_earlier=n)
    by_models: dict[str, Any] = {}
    for models in sorted({r["models"] for r in records} - {1}):
        variants = {"full": rule_rates(records, models=models)}
        for n in design.cold_starts:
            if select(records, n_earlier=n, models=models):
                variants[str(n)] = rule_rates(records, n_earlier=n, models=models)
        by_models[str(models)] = {
            "rates": variants,
            "breakdown": breakdown(records, models=models),
            "diagnostics": diagnostics(records, models=models),
        }
    r2 = [drop.meta["eval_r2"] for drop in built.drops]
    return jsonable(
        {
            "finished": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "design": design,
            "methods": METHODS,
            "method_options": METHOD_OPTIONS,
            "drift_config": repr(config),
            "machine": machine(),
            "seconds": seconds,
            "counts": {
                "drops": len(built.drops),
                "reseed": len(select(records, planted=False)),
                "planted": len(select(records, planted=True)),
            },
            "n_train": built.drops[0].meta["n_train"],
            "eval_r2": {"median": statistics.median(r2), "min": min(r2), "max": max(r2)},
            "profiles": built.profiles,
            "planted": built.planted,
            "rates": rates,
            "breakdown": breakdown(records),
            "frozen": frozen_summary(records),
            "diagnostics": diagnostics(records),
            "by_models": by_models,
            "sweep": sweep_rows,
            "records": records,
        }
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    config = drift_config(args)
    design = Design(
        groups=DEFAULT_GROUPS[: args.groups],
        n_history=args.history,
        n_reseeds=args.reseeds,
        n_weak=args.weak,
        settings=ModelSettings(),
        frozen=not args.no_frozen,
        copies=args.copies,
        workers=args.workers,
    )
    args.results.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    built = build(design, args.cache, fresh=args.fresh, progress=lambda line: print(line, flush=True))
    judging = time.perf_counter()
    records = judge_all(built.scenarios, design, config)
    thresholds = [float(t) for t in args.sweep_thresholds.split(",") if t.strip()]
    agreeing = [int(k) for k in args.sweep_agreeing.split(",") if k.strip()]
    epsilons = [float(e) for e in args.sweep_epsilon.split(",") if e.strip()]
    sweep_rows = (
        sweep(built, config, thresholds, agreeing, epsilons) if thresholds and agreeing and epsilons else []
    )
    seconds = {**built.seconds, "judging": time.perf_counter() - judging}
    seconds["total"] = time.perf_counter() - started
    results = results_of(built, records, design, config, seconds, sweep_rows)
    args.results.mkdir(parents=True, exist_ok=True)  # again: bench/run_all.sh may have deleted it meanwhile
    json_path = args.results / f"{args.output_name}.json"
    json_path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    text = report.render(results)
    markdown = args.results / f"{args.output_name}.md"
    markdown.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {json_path} and {markdown} in {seconds['total']:.0f} s")
    if args.docs:
        report.replace_block(DOCS, text)
        print(f"replaced the results block of {DOCS}")


if __name__ == "__main__":
    main()
