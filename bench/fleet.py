"""A fleet of small models, end to end: wall time, CPU time, cores busy, peak RSS, and the share of
the run outside the methods' own computation (issue 15).

Builds `--models` registries of 2 weekly drops of a small MLP (12 features, Dense 64-32-1, 2,000
eval rows), then times `drift-audit run --fleet` in this process, as a user runs it (Prefect's
temporary server included). A sampler thread reads this process's RSS every 0.2 s and notes it when
the 10th and the last model's report is written.

    .venv/bin/python bench/fleet.py [--models 50] [--methods all|weight_sum,permutation] \\
        [--task-runner default|dask] [--dask-workers 2] [--tf-threads N] [--alone-models 10] [--out DIR]

`--dask-workers` sizes the local Dask cluster (the product's is `flows.runners.LOCAL_CLUSTER`, 2);
`--tf-threads` limits TensorFlow to N intra-op and N inter-op threads in this process and in the
Dask workers (they inherit the environment), so that 1 and 2 workers can be compared on 2 cores.

Cores busy = CPU time (this process and its children: the temporary server, the report-drawing
process, Dask workers; each child's share is printed too) / (wall time x cores).

The methods' own computation, two ways:
- `outside_share_vs_alone` = 1 - methods alone / wall time. After the run, the same methods run on
  the first `--alone-models` models, one after another in this process (each drop's model, and
  the previous model on the second drop's sample, as the flow runs them; models freshly loaded,
  loading not timed); their time is scaled to the fleet. What the run would take if everything
  around the methods cost nothing. 0 skips it.
- `outside_share` = 1 - (sum of `method_results.seconds` / cores) / wall time, the first measure:
  it counts each method's wall time while other tasks run beside it (inflated when they overlap)
  and leaves the previous model's runs out (their seconds are not stored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sqlite3
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

# as `drift-audit run` sets it (flows.cli), before Prefect's settings are first read here
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# TensorFlow (through _common, which sets its log level and Keras' home first) is imported in
# `main`, not here: a fleet draws its reports in a spawned process, which runs this module's top
# level again, and that process, like the one `drift-audit run` spawns, imports no TensorFlow.

WEEKS = (dt.date(2024, 1, 1), dt.date(2024, 1, 8))


def build_fleet(root: Path, n_models: int, n_rows: int = 2000) -> Path:
    """`root`/model-NN/<week>/ with model.keras and eval.npz, every model and sample its own (the
    method cache keys on content: copies of one template would be computed once)."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    fleet = root / "fleet"
    for index in range(n_models):
        for offset, week in enumerate(WEEKS):
            keras.utils.set_random_seed(index * len(WEEKS) + offset)
            model = keras.Sequential(
                [
                    keras.Input((12,)),
                    keras.layers.Dense(64, activation="relu"),
                    keras.layers.Dense(32, activation="relu"),
                    keras.layers.Dense(1),
                ]
            )
            X = rng.normal(size=(n_rows, 12)).astype(np.float32)
            y = model.predict(X, verbose=0)[:, 0] + rng.normal(scale=0.05, size=n_rows)
            folder = fleet / f"model-{index:02d}" / week.isoformat()
            folder.mkdir(parents=True)
            model.save(folder / "model.keras")
            np.savez(folder / "eval.npz", X=X, y=y.astype(np.float32))
    return fleet


def methods_alone(fleet: Path, n_models: int, methods: str) -> float:
    """Seconds the methods take on their own for the first `n_models` models, one method after
    another in this process, as the flow runs them: every method on each drop's model and, on the
    second drop, the data methods on the previous drop's model with this drop's sample (the frozen
    set). Models are loaded afresh, so each method pays its tracing as in the flow; loading is not
    timed."""
    from audit.loading import load_drop, load_model
    from audit.registry import discover_drops
    from audit.runner import run_method, select_methods

    specs = select_methods(None if methods == "all" else methods.split(","))
    total = 0.0

    def timed(loaded: Any, chosen: Any) -> float:
        started = time.perf_counter()
        for spec in chosen:
            run_method(loaded, spec, random_state=0)
        return time.perf_counter() - started

    for index in range(n_models):
        previous = None
        for drop in discover_drops(fleet / f"model-{index:02d}").drops:
            loaded = load_drop(drop)
            total += timed(loaded, specs)
            if previous is not None:
                frozen = replace(loaded, model=load_model(previous), copies=())
                total += timed(frozen, [spec for spec in specs if spec.needs_eval_sample])
            previous = drop.model_paths[0]
    return total


def _role(command: str) -> str:
    """What a child process of the run is, from its command line."""
    if "flows.render_pool" in command:
        return "drawing_process"
    if "multiprocessing" in command or "dask" in command:  # a local cluster's spawned workers
        return "dask_workers"
    if "prefect" in command or "uvicorn" in command:
        return "prefect_server"
    return "other_children"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    """RSS of this process when the 10th and the last report appear under `out`."""

    def __init__(self, out: Path, n_models: int) -> None:
        super().__init__(daemon=True)
        self.out, self.n_models = out, n_models
        self.at: dict[int, float] = {}
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            rss = _rss_mb()
            self.peak = max(self.peak, rss)
            done = len(list(self.out.glob("model-*/*/report.html"))) if self.out.exists() else 0
            for mark in (10, self.n_models):
                if done >= mark and mark not in self.at:
                    self.at[mark] = rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--task-runner", default="default", choices=("default", "dask"))
    parser.add_argument("--dask-workers", type=int, default=None)
    parser.add_argument("--tf-threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--alone-models", type=int, default=10)
    args = parser.parse_args()
    if args.tf_threads is not None:  # before TensorFlow starts its thread pools (first op below)
        os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(args.tf_threads)
    import _common  # noqa: F401

    if args.dask_workers is not None:
        from flows import runners

        runners.LOCAL_CLUSTER["n_workers"] = args.dask_workers  # read when the flow builds its runner
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    fleet = build_fleet(work, args.models)
    out = args.out or work / "out"

    from flows.cli import main as cli

    command = ["run", "--fleet", str(fleet), "--out", str(out), "--quiet", "--no-email"]
    command += ["--task-runner", args.task_runner]
    if args.methods != "all":
        command += ["--methods", args.methods]
    sampler = Sampler(out, args.models)
    sampler.start()
    start_wall, start_self = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    start_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    living: dict[int, tuple[str, float]] = {}

    def note_children() -> None:  # the temporary server and Dask workers are still alive at the end
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                times, command = child.cpu_times(), " ".join(child.cmdline())
                living[child.pid] = (_role(command), times.user + times.system)
            except psutil.Error:
                pass

    from prefect.server.api.server import SubprocessASGIServer

    from flows import render_pool

    def noting_first(stop: Any) -> Any:  # the server and the drawing process are stopped in the run
        def stop_and_note(self: Any) -> None:
            note_children()
            stop(self)

        return stop_and_note

    SubprocessASGIServer.stop = noting_first(SubprocessASGIServer.stop)  # type: ignore[method-assign]
    render_pool._Drawer.stop = noting_first(render_pool._Drawer.stop)  # type: ignore[method-assign]
    code = cli(command)
    note_children()
    import psutil

    # Children reaped in the run (the drawing process; a temporary server stopped by the CLI) are in
    # RUSAGE_CHILDREN already; only those still alive are added from their notes.
    alive = {child.pid for child in psutil.Process().children(recursive=True)}
    wall = time.perf_counter() - start_wall
    end_self, end_children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    sampler.stop.set()
    sampler.join()
    cpu = sum(
        getattr(end, field) - getattr(begin, field)
        for end, begin in ((end_self, start_self), (end_children, start_children))
        for field in ("ru_utime", "ru_stime")
    ) + sum(seconds for pid, (_, seconds) in living.items() if pid in alive)
    with sqlite3.connect(out / "drift-audit.db") as connection:
        method_seconds = connection.execute(
            "SELECT COALESCE(SUM(seconds), 0) FROM method_results"
        ).fetchone()[0]
        n_tasks = connection.execute("SELECT COUNT(*) FROM method_results").fetchone()[0]
    cores = os.cpu_count() or 1
    result = {
        "models": args.models,
        "drops": args.models * len(WEEKS),
        "methods": args.methods,
        "task_runner": args.task_runner,
        "dask_workers": args.dask_workers if args.task_runner == "dask" else None,
        "tf_threads": args.tf_threads,
        "exit_status": code,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cores": cores,
        "cores_busy": round(cpu / (wall * cores), 3),
        **{
            f"cpu_{role}_s": round(sum(seconds for r, seconds in living.values() if r == role), 1)
            for role in sorted({role for role, _ in living.values()})
        },
        "method_results": n_tasks,
        "method_seconds": round(method_seconds, 1),
        "outside_share": round(1 - (method_seconds / cores) / wall, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_model_10_mb": round(sampler.at.get(10, float("nan")), 1),
        f"rss_after_model_{args.models}_mb": round(sampler.at.get(args.models, float("nan")), 1),
        "load_average": os.getloadavg(),
    }
    if args.alone_models:  # after the run, in the same process: imports and fonts are warm
        alone = methods_alone(fleet, args.alone_models, args.methods) * args.models / args.alone_models
        result["methods_alone_s"] = round(alone, 1)
        result["methods_alone_models"] = args.alone_models
        result["outside_share_vs_alone"] = round(1 - alone / wall, 3)
    print(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
