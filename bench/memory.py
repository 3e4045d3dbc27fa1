"""Peak memory of each data method on 10k and 100k eval samples of workload (a), one process each.

Every (method, size) runs in a fresh child process: it loads the model, makes the float64 eval
sample (X: (n, 24, 11), y: (n,)), then resets the kernel's peak-RSS mark (``/proc/self/clear_refs``)
and runs the method once through its registered adapter. Reported per run:

- ``peak``: the peak RSS of the process during the method (VmHWM after the reset);
- ``peak - input``: the same minus the bytes of X and y, which grow with the sample by definition;
- ``method``: the peak minus the RSS just before the method (what the method itself added).

The issue's target (peak grows < 20 % from 10k to 100k) is checked on ``peak - input``. Options
that only bound the run time (they do not change chunk sizes): permutation and perturbation with
n_repeats=1, integrated gradients with 4 steps and no step doubling.

    .venv/bin/python bench/memory.py [--sizes 10000,100000] [--methods ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import REPO, RESULTS, WORKLOADS, build_model, load_model, log, make_data, write_result

TARGET_GROWTH = 0.20
#: Every method that reads the eval sample.
METHODS = (
    "permutation",
    "perturbation",
    "integrated_gradients",
    "saliency",
    "gradient_x_input",
    "grad_cam",
    "sensitivity_sweep",
)
OPTIONS: dict[str, dict[str, object]] = {
    "permutation": {"n_repeats": 1},
    "perturbation": {"n_repeats": 1},
    "integrated_gradients": {"steps": 4, "tolerance": 1e9},
}


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def patch_budgets(forward_bytes: int) -> None:
    """What-if: forward calls of `forward_bytes` of input and gradient calls of a quarter of that.

    Patches the module constants and the ``chunk_bytes`` defaults of every audit function that
    has one, so every model call of every method is smaller (audit/ itself is not edited).
    """
    import importlib
    import inspect
    import pkgutil

    import audit.methods
    from audit import forward, gradients

    new_budget = {
        forward.DEFAULT_CHUNK_BYTES: forward_bytes,
        gradients.DEFAULT_GRADIENT_CHUNK_BYTES: forward_bytes // 4,
    }
    names = [f"audit.methods.{info.name}" for info in pkgutil.iter_modules(audit.methods.__path__)]
    for module in [forward, gradients, *(importlib.import_module(name) for name in names)]:
        for constant in ("DEFAULT_CHUNK_BYTES", "DEFAULT_GRADIENT_CHUNK_BYTES"):
            if hasattr(module, constant):
                setattr(module, constant, new_budget[getattr(module, constant)])
        for _, function in inspect.getmembers(module, inspect.isfunction):
            defaults = function.__kwdefaults__ or {}
            if defaults.get("chunk_bytes") in new_budget:
                function.__kwdefaults__ = {**defaults, "chunk_bytes": new_budget[defaults["chunk_bytes"]]}


def child(method: str, samples: int, model_path: Path, forward_chunk_mib: float | None) -> dict[str, Any]:
    from audit.methods import registered_methods
    from audit.targets import REGRESSION_TARGET

    if forward_chunk_mib is not None:
        patch_budgets(int(forward_chunk_mib * 2**20))

    spec = registered_methods()[method]
    model = load_model(model_path)
    X, y = make_data(model, samples, None)
    context = spec.context(
        tuple(f"f{i}" for i in range(X.shape[-1])),
        REGRESSION_TARGET,
        random_state=0,
        options=OPTIONS.get(method),
    )
    gc.collect()
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    spec.compute(model, X, y, context)
    peak = status_kib("VmHWM")
    return {
        "method": method,
        "samples": samples,
        "input_bytes": int(X.nbytes + y.nbytes),
        "rss_before_bytes": before * 1024,
        "peak_bytes": peak * 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SAMPLES"))
    parser.add_argument(
        "--forward-chunk-mib",
        type=float,
        help="what-if: forward calls of this many MiB of input, gradient calls of a quarter",
    )
    args = parser.parse_args()
    model_path = RESULTS / "models" / "a.keras"
    if args.child:
        found = child(args.child[0], int(args.child[1]), model_path, args.forward_chunk_mib)
        print(json.dumps(found), flush=True)
        return
    what_if = [] if args.forward_chunk_mib is None else ["--forward-chunk-mib", str(args.forward_chunk_mib)]
    build_model(WORKLOADS["a"].build, model_path)
    sizes = [int(size) for size in args.sizes.split(",")]
    runs: list[dict[str, Any]] = []
    for method in args.methods.split(","):
        for samples in sizes:
            log(f"[memory] {method} on {samples} samples ...")
            completed = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", method, str(samples), *what_if],
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            if completed.returncode != 0:
                runs.append({"method": method, "samples": samples, "error": completed.stderr[-2000:]})
                log(f"[memory] {method} on {samples} failed: {completed.stderr[-500:]}")
                continue
            run = json.loads(completed.stdout.strip().splitlines()[-1])
            runs.append(run)
            mib = {key: value / 2**20 for key, value in run.items() if key.endswith("_bytes")}
            log(
                f"[memory] {method} {samples}: peak {mib['peak_bytes']:.0f} MiB, input "
                f"{mib['input_bytes']:.0f} MiB, before the method {mib['rss_before_bytes']:.0f} MiB"
            )
    write_result(
        "memory" if args.forward_chunk_mib is None else f"memory-what-if-{args.forward_chunk_mib:g}mib",
        {
            "workload": WORKLOADS["a"].title,
            "forward_chunk_mib": args.forward_chunk_mib,
            "sizes": sizes,
            "options": OPTIONS,
            "target_growth": TARGET_GROWTH,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
