"""Turn bench/results/*.json into markdown tables with a PASS/MISS column per target.

Writes bench/results/summary.md; with ``--docs`` also replaces the block between the markers
``<!-- bench:results:start -->`` and ``<!-- bench:results:end -->`` in docs/benchmarks.md.
Reads JSON only (no TensorFlow), so it runs in a second.

    .venv/bin/python bench/report.py [--docs]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def verdict(passed: bool) -> str:
    return "**PASS**" if passed else "**MISS**"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def machine_section(found: dict[str, dict[str, Any]]) -> list[str]:
    first = next(iter(found.values()))["machine"]
    loads = {name: data["machine"].get("load_average_at_write", ["?"])[0] for name, data in found.items()}
    load_text = ", ".join(f"{name} {value:.1f}" for name, value in loads.items() if isinstance(value, float))
    code = first.get("audit_code", {})
    code_text = ""
    if code:
        state = "with uncommitted changes" if code.get("audit_differs_from_commit") else "as committed"
        code_text = f" audit/ at commit {code['commit']} ({state}; files digest {code['digest']})."
    return [
        f"Machine: {first['cores']} cores, {first['cpu']}; Python {first['python']}, TensorFlow "
        f"{first['tensorflow']}, Keras {first['keras']}, NumPy {first['numpy']}. "
        f"1-minute load average when each result was written: {load_text}.{code_text}",
        "",
    ]


def methods_section(data: dict[str, Any]) -> tuple[list[str], list[tuple[str, bool | None]]]:
    target = data["target_ratio"]
    rows, verdicts = [], []
    for row in data["rows"]:
        name = f"{row['workload']}/{row['method']}"
        if row["status"] != "ok":
            reason = row["reason"].split(";")[-1].strip()[:70]
            rows.append([row["workload"], row["method"], f"not applicable ({reason})"] + ["—"] * 9)
            continue
        timing, steady_counts = row["timing"], row["steady_counts"]
        first_traces = row["first_counts"]["traces"]
        steady_traces = max((counts["traces"] for counts in steady_counts), default=0)
        per_function = row["first_counts"]["traces_per_function"]
        no_chunk_retrace = all(count <= 1 for count in per_function.values()) and all(
            count <= 1 for counts in steady_counts for count in counts["traces_per_function"].values()
        )
        calls = row["first_counts"]["audit_calls"]
        outside = statistics.median(c["seconds_outside_graph_calls"] / c["seconds"] for c in steady_counts)
        trace_text = f"{first_traces} / {steady_traces} ({calls})"
        retrace = "none" if steady_traces == 0 else "per call"
        if not no_chunk_retrace:
            retrace = "**per chunk**"
        if row.get("floor") is None:
            rows.append(
                [
                    row["workload"],
                    row["method"],
                    "none: reads weights only",
                    seconds(timing["first"]),
                    seconds(timing["steady"]),
                    "—",
                    "—",
                    trace_text,
                    retrace,
                    "n/a",
                ]
            )
            rows[-1][6:6] = ["—", "—"]
            continue
        ratio = row["ratio"]
        low, high = row["ratio_range"]
        verdicts.append((f"{name} <= {target}x floor", ratio <= target))
        verdicts.append((f"{name} no retracing per chunk", no_chunk_retrace))
        rows.append(
            [
                row["workload"],
                row["method"],
                row["floor"]["description"],
                seconds(timing["first"]),
                seconds(timing["steady"]),
                seconds(row["floor"]["steady"]),
                f"**{ratio:.2f}x** [{low:.2f}–{high:.2f}, {len(row['rounds'])} rounds]",
                f"{row['ratio_cpu']:.2f}x / {row['ratio_of_minima']:.2f}x",
                f"{outside:.0%}",
                trace_text,
                retrace,
                verdict(ratio <= target),
            ]
        )
    header = [
        "wl",
        "method",
        "floor: passes it must do",
        "first call s",
        "steady s",
        "floor s",
        "steady / floor: median of rounds [range]",
        "CPU / min-based",
        "outside graph calls",
        "traces first / steady (graph calls)",
        "retracing",
        f"<= {target}x",
    ]
    lines = [
        "### Every method against its floor (steady: medians of >= 3 rounds alternating method and floor)",
        "",
        *table(header, rows),
        "",
    ]
    return lines, verdicts


def ig_loop_section(data: dict[str, Any]) -> tuple[list[str], list[tuple[str, bool | None]]]:
    passed = data["speedup"] >= data["target_speedup"]
    rows = [
        [
            "audit (batched, traced)",
            seconds(data["ours"]["first"]),
            seconds(data["ours"]["steady"]),
            f"{data['speedup']:.0f}x faster (CPU time {data['speedup_cpu']:.0f}x)",
            verdict(passed),
        ],
        [
            f"per-sample GradientTape loop (timed on {data['loop_samples_timed']}, scaled)",
            seconds(data["loop"]["first"]),
            seconds(data["loop"]["steady"]),
            "",
            "",
        ],
    ]
    lines = [
        f"### Integrated gradients vs a per-sample GradientTape loop ({data['model']}, "
        f"{data['n_samples']} samples, {data['steps']} steps; target >= {data['target_speedup']:.0f}x)",
        "",
        *table(["implementation", "first call s", "steady s", "speedup", "target"], rows),
        "",
        f"Per-feature mean |attribution| of the two agree to {data['max_rel_difference_per_feature']:.1e} "
        "(relative).",
        "",
    ]
    return lines, [(f"IG >= {data['target_speedup']:.0f}x faster than the per-sample loop", passed)]


def alibi_section(data: dict[str, Any]) -> tuple[list[str], list[tuple[str, bool | None]]]:
    title = (
        f"### Integrated gradients vs Alibi {data['alibi_requested_version']} ({data['model']}, "
        f"{data['n_samples']} samples, {data['steps']} steps; target >= {data['target_speedup']:.0f}x "
        "its fastest batch)"
    )
    alibi = data["alibi"]
    if alibi is None:
        error = (data["alibi_error"] or "").strip().replace("\n", " ")[-600:]
        return [title, "", f"Alibi could not be run: `{error}`", ""], [("IG vs Alibi", None)]
    ours = data["ours"]["steady"]
    rows = [
        [
            "audit",
            seconds(data["ours"]["first"]),
            seconds(ours),
            "1",
            f"its floor: {seconds(data['ours_floor']['steady'])} s",
        ]
    ]
    for size, timing in alibi["per_batch_size"].items():
        note = "default" if size == "100" else ""
        if int(size) == alibi["fastest_batch_size"]:
            note = (note + " fastest").strip()
        if timing["one_call"]:
            note = (note + "; one call").strip("; ")
        rows.append(
            [
                f"Alibi {alibi['alibi']}, internal_batch_size={size}",
                seconds(timing["first"]),
                seconds(timing["steady"]),
                f"{timing['steady'] / ours:.1f}x slower",
                note,
            ]
        )
    passed = data["speedup_vs_fastest"] >= data["target_speedup"]
    lines = [
        title,
        "",
        *table(["implementation", "first call s", "steady s", "vs audit", "note"], rows),
        "",
        f"audit is **{data['speedup_vs_fastest']:.1f}x** faster than Alibi at its fastest batch "
        f"(median over rounds; CPU time {data['speedup_vs_fastest_cpu']:.1f}x): {verdict(passed)}. "
        f"Attributions agree to {data['max_rel_difference_per_feature']:.1e} (relative, "
        "per-feature mean |attribution|).",
        "",
    ]
    return lines, [(f"IG >= {data['target_speedup']:.0f}x faster than Alibi's fastest batch", passed)]


def sklearn_section(data: dict[str, Any]) -> tuple[list[str], list[tuple[str, bool | None]]]:
    title = (
        f"### Permutation importance vs scikit-learn ({data['model']}, {data['n_samples']} samples, "
        f"{data['n_features']} features, {data['n_repeats']} repeats, log-loss; target: faster)"
    )
    if data["sklearn"] is None:
        error = (data["sklearn_error"] or "").strip().replace("\n", " ")[-600:]
        lines = [title, "", f"scikit-learn could not be run: `{error}`", ""]
        return lines, [("permutation vs sklearn", None)]
    variants = data["sklearn"]["variants"]
    ours = data["ours"]["steady"]
    rows = [["audit `compute_permutation`", seconds(data["ours"]["first"]), seconds(ours), "1"]]
    if "ours_small_calls" in data:
        small = data["ours_small_calls"]["steady"]
        label = f"audit, `batch_size={data['what_if_batch_size']}` (what-if)"
        rows.append([label, "—", seconds(small), f"{small / ours:.2f}"])
    labels = {
        "traced": "sklearn `permutation_importance`, predict_proba = one traced call",
        "keras_predict": "sklearn `permutation_importance`, predict_proba = `model.predict` (batch 32)",
    }
    for mode, timing in variants.items():
        ratio = f"{timing['steady'] / ours:.2f}"
        rows.append([labels[mode], seconds(timing["first"]), seconds(timing["steady"]), ratio])
    passed = data["speedup_vs_traced"] > 1.0
    lines = [
        title,
        "",
        *table(["implementation", "first call s", "steady s", "its time / audit's"], rows),
        "",
        f"Against the fastest wrapper: audit takes {1 / data['speedup_vs_traced']:.2f}x sklearn's time "
        f"(median over rounds; CPU time {1 / data['speedup_vs_traced_cpu']:.2f}x): {verdict(passed)}. "
        + (
            f"With `batch_size={data['what_if_batch_size']}`, sklearn takes "
            f"{data['what_if_speedup_vs_traced']:.2f}x audit's time. "
            if "what_if_speedup_vs_traced" in data
            else ""
        )
        + f"Both do {data['forward_rows']:,} forward rows. Rank correlation of the two "
        f"importance vectors (different shuffles): {data['importance_rank_correlation']:.2f}.",
        "",
    ]
    return lines, [("permutation faster than sklearn (fastest wrapper)", passed)]


def memory_section(data: dict[str, Any]) -> tuple[list[str], list[tuple[str, bool | None]]]:
    small, large = data["sizes"][0], data["sizes"][-1]
    target = data["target_growth"]
    by_method: dict[str, dict[int, dict[str, Any]]] = {}
    for run in data["runs"]:
        by_method.setdefault(run["method"], {})[run["samples"]] = run
    rows, verdicts = [], []
    mib = 2**20
    for method, runs in by_method.items():
        if small not in runs or large not in runs or "error" in runs[small] or "error" in runs[large]:
            rows.append([method, "failed"] + ["—"] * 5)
            continue
        a, b = runs[small], runs[large]
        raw = (a["peak_bytes"] / mib, b["peak_bytes"] / mib)
        net = tuple((run["peak_bytes"] - run["input_bytes"]) / mib for run in (a, b))
        added = tuple((run["peak_bytes"] - run["rss_before_bytes"]) / mib for run in (a, b))
        growth = net[1] / net[0] - 1
        verdicts.append((f"memory {method}: peak - input grows < {target:.0%}", growth < target))
        rows.append(
            [
                method,
                f"{raw[0]:.0f} → {raw[1]:.0f} ({raw[1] / raw[0] - 1:+.0%})",
                f"{net[0]:.0f} → {net[1]:.0f} ({growth:+.0%})",
                f"{added[0]:.0f} → {added[1]:.0f} ({added[1] / added[0] - 1:+.0%})",
                f"{a['input_bytes'] / mib:.0f} → {b['input_bytes'] / mib:.0f}",
                verdict(growth < target),
            ]
        )
    header = [
        "method",
        "peak RSS MiB",
        "peak - input MiB",
        "added by the method MiB",
        "input (X, y) MiB",
        f"< {target:.0%} (peak - input)",
    ]
    lines = [
        f"### Peak memory, {small:,} → {large:,} eval samples of workload (a)",
        "",
        *table(header, rows),
        "",
        "Options that only bound the run time: "
        + json.dumps({name: value for name, value in data["options"].items() if name in by_method})
        + ".",
        "",
    ]
    return lines, verdicts


def chunks_section(data: dict[str, Any]) -> list[str]:
    rows = []
    for key, kinds in data["workloads"].items():
        for kind, points in kinds.items():
            default = next(point for point in points if point["is_default"])
            best = max(points, key=lambda point: point["rows_per_second"])
            cells = ", ".join(
                f"{p['rows_per_call']:,}: {p['rows_per_second'] / 1000:.0f}k"
                + (" (default)" if p["is_default"] else "")
                for p in points
            )
            rows.append([key, kind, cells, f"{best['rows_per_second'] / default['rows_per_second']:.2f}x"])
    return [
        "### Rows per second against rows per call (the rows of one default-sized call)",
        "",
        *table(["wl", "pass", "rows per call: rows/s", "best / default"], rows),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", action="store_true", help="also update the block in docs/benchmarks.md")
    args = parser.parse_args()
    alibi = sorted(path.stem for path in RESULTS.glob("alibi_ig-*.json"))
    names = ["methods", "ig_vs_loop", *alibi, "permutation_vs_sklearn", "memory", "chunks"]
    found = {name: data for name in names if (data := load(name)) is not None}
    if not found:
        raise SystemExit("no results in bench/results: run bench/run_all.sh first")
    lines = machine_section(found)
    verdicts: list[tuple[str, bool | None]] = []
    sections = {
        "methods": methods_section,
        "ig_vs_loop": ig_loop_section,
        "permutation_vs_sklearn": sklearn_section,
        "memory": memory_section,
    }
    for name, data in found.items():
        if name in sections:
            section, found_verdicts = sections[name](data)
        elif name.startswith("alibi_ig-"):
            section, found_verdicts = alibi_section(data)
        else:
            section, found_verdicts = chunks_section(data), []
        lines += section
        verdicts += found_verdicts
    misses = [name for name, passed in verdicts if passed is False]
    unknown = [name for name, passed in verdicts if passed is None]
    summary = [
        f"**{sum(1 for _, p in verdicts if p)} of {len(verdicts)} targets met.**"
        + (f" Misses: {'; '.join(misses)}." if misses else "")
        + (f" Not measured: {'; '.join(unknown)}." if unknown else ""),
        "",
    ]
    durations = RESULTS / "durations.txt"
    if durations.exists():
        parts = [line.split() for line in durations.read_text().splitlines() if line.strip()]
        lines += ["Wall time per script (s): " + ", ".join(f"{name} {sec}" for name, sec in parts) + ".", ""]
    text = "\n".join(summary + lines)
    (RESULTS / "summary.md").write_text(text)
    print(f"wrote {(RESULTS / 'summary.md').relative_to(REPO)}")
    if args.docs:
        docs = DOCS.read_text()
        if START not in docs or END not in docs:
            raise SystemExit(f"{DOCS} has no {START} ... {END} block")
        before, rest = docs.split(START, 1)
        after = rest.split(END, 1)[1]
        DOCS.write_text(f"{before}{START}\n{text}\n{END}{after}")
        print(f"updated {DOCS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
