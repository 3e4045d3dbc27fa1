"""Method tasks on threads: is running a drop's methods on N threads faster than one after another?

TensorFlow releases the GIL inside its kernels, but it also spreads one kernel over every core, so on
a small machine threads can only win where Python overhead or small kernels leave cores idle. This
runs every registered method on the model and sample of one drop, sequentially and on 2 and 4
threads (as the default task runner does), and prints the wall time of each (median of `--rounds`).
It picks `flows.runners.DEFAULT_MAX_WORKERS`.

    .venv/bin/python bench/threads.py [--rounds 3] [--samples 2000] [--sequence]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common  # noqa: F401  (sets TF's log level and Keras' home before TF is imported)
import keras
import numpy as np

from audit.config import read_drop_config
from audit.loading import LoadedDrop, describe_model, infer_task
from audit.runner import run_method, select_methods
from audit.targets import OutputTarget, output_activation
from audit.types import Drop, EvalSample, MethodStatus


def _drop(n_samples: int, sequence: bool) -> LoadedDrop:
    keras.utils.set_random_seed(0)
    shape = (24, 8) if sequence else (12,)
    body = (
        [keras.layers.Conv1D(16, 3, activation="relu"), keras.layers.LSTM(16)]
        if sequence
        else [keras.layers.Dense(64, activation="relu"), keras.layers.Dense(32, activation="relu")]
    )
    model = keras.Sequential([keras.Input(shape), *body, keras.layers.Dense(1)])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_samples, *shape)).astype(np.float32)
    y = model.predict(X, verbose=0)[:, 0] + rng.normal(scale=0.05, size=n_samples)
    names = tuple(f"f{i}" for i in range(shape[-1]))
    config = read_drop_config(None)
    task = infer_task(model, config)
    path = Path(tempfile.mkdtemp(prefix="bench-threads-")) / "model.keras"
    model.save(path)
    return LoadedDrop(
        drop=Drop(
            week=dt.date(2024, 1, 1), path=path.parent, model_path=path, eval_paths=(), config_path=None
        ),
        model=model,
        facts=describe_model(model, path, task),
        sample=EvalSample(X=X, y=y.astype(np.float32), feature_names=names, source=path, content_hash="-"),
        feature_names=names,
        config=config,
        target=OutputTarget(task=task, activation=output_activation(model)),
    )


def _run_all(loaded: LoadedDrop, threads: int) -> float:
    specs = select_methods(None)
    started = time.perf_counter()
    if threads == 1:
        outcomes = [run_method(loaded, spec) for spec in specs]
    else:
        with ThreadPoolExecutor(threads) as pool:
            outcomes = list(pool.map(lambda spec: run_method(loaded, spec), specs))
    seconds = time.perf_counter() - started
    failed = [o.method for o in outcomes if o.status is MethodStatus.FAILED]
    if failed:
        raise RuntimeError(f"methods failed: {failed}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--sequence", action="store_true", help="a Conv1D+LSTM model on (n, 24, 8)")
    args = parser.parse_args()
    loaded = _drop(args.samples, args.sequence)
    _run_all(loaded, 1)  # warm-up: traces every method's functions once
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, samples: {args.samples}")
    for threads in (1, 2, 4):
        times = [_run_all(loaded, threads) for _ in range(args.rounds)]
        each = ", ".join(f"{t:.2f}" for t in times)
        print(f"{threads} thread(s): median {statistics.median(times):.2f} s  ({each})")


if __name__ == "__main__":
    main()
