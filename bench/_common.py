"""Shared pieces of the benchmarks: reference workloads, timing, trace counting and floors.

Every benchmark script imports this module first: it sets TensorFlow's log level and Keras' home
before TensorFlow is imported, so the scripts run the same from `run_all.sh` or by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", str(REPO / ".cache" / "keras"))

import functools  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SEED = 0


# --- reference workloads ------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A reference model with its eval sample size; classification when `n_classes` is set."""

    key: str
    title: str
    build: Callable[[], keras.Model]
    n_samples: int
    n_classes: int | None = None

    @property
    def is_classification(self) -> bool:
        return self.n_classes is not None


def gru_conv_regressor() -> keras.Model:
    """(a) GRU(32) -> AveragePooling1D -> Conv1D(16) -> Dense(1) on (24 steps, 11 features)."""
    inputs = keras.Input((24, 11))
    hidden = keras.layers.GRU(32, return_sequences=True)(inputs)
    hidden = keras.layers.AveragePooling1D(2)(hidden)
    hidden = keras.layers.Conv1D(16, 3, activation="relu")(hidden)
    hidden = keras.layers.Flatten()(hidden)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden), name="a_gru_conv")


def wide_mlp() -> keras.Model:
    """(b) MLP 82 -> 500 -> 500 -> 500 -> 2 softmax."""
    inputs = keras.Input((82,))
    hidden = inputs
    for _ in range(3):
        hidden = keras.layers.Dense(500, activation="relu")(hidden)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden), name="b_mlp")


def conv_classifier() -> keras.Model:
    """(c) Conv1D(32, 5) x 3 -> GlobalAveragePooling1D -> Dense(3) softmax on (100 steps, 6 channels)."""
    inputs = keras.Input((100, 6))
    hidden = inputs
    for _ in range(3):
        hidden = keras.layers.Conv1D(32, 5, activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling1D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden), name="c_conv")


def lstm_reference() -> keras.Model:
    """The issue's IG reference: LSTM(16) -> Dense(1) on (24 steps, 11 features)."""
    inputs = keras.Input((24, 11))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.LSTM(16)(inputs)), name="lstm16")


WORKLOADS = {
    "a": Workload("a", "GRU(32)>AvgPool>Conv1D(16)>Dense, (24, 11), regression", gru_conv_regressor, 2000),
    "b": Workload("b", "MLP 82>500>500>500>2 softmax", wide_mlp, 5000, n_classes=2),
    "c": Workload("c", "Conv1D x3 classifier, (100, 6), 3 classes", conv_classifier, 1000, n_classes=3),
}


def build_model(build: Callable[[], keras.Model], path: Path) -> Path:
    """Build `build()` with fixed seeds and save it as a .keras file (random weights)."""
    keras.utils.set_random_seed(SEED)
    path.parent.mkdir(parents=True, exist_ok=True)
    build().save(path)
    return path


def load_model(path: Path) -> keras.Model:
    """A fresh model object: module-level trace caches keyed on the model start empty for it."""
    return keras.models.load_model(path, compile=False)


def make_data(
    model: keras.Model, n_samples: int, n_classes: int | None, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal float64 X of the model's input shape, and targets or class labels."""
    rng = np.random.default_rng(seed)
    shape = tuple(model.inputs[0].shape)[1:]
    X = rng.standard_normal((n_samples, *shape))
    y = rng.standard_normal(n_samples) if n_classes is None else rng.integers(0, n_classes, n_samples)
    return X, y.astype(np.float64)


# --- timing -------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall and CPU seconds of the first call (tracing included) and of the steady-state calls.

    CPU seconds are the process's (all threads); they move less than wall seconds when other
    processes share the two cores, so they serve as a cross-check of every ratio.
    """

    first: float | None
    runs: list[float]
    first_cpu: float | None = None
    cpu_runs: list[float] = field(default_factory=list)

    @property
    def steady(self) -> float:
        return statistics.median(self.runs)

    @property
    def steady_cpu(self) -> float | None:
        return statistics.median(self.cpu_runs) if self.cpu_runs else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "runs": self.runs,
            "steady": self.steady,
            "first_cpu": self.first_cpu,
            "cpu_runs": self.cpu_runs,
            "steady_cpu": self.steady_cpu,
        }


@dataclass(frozen=True)
class Measured:
    """Returned by a call that measured itself elsewhere (a worker process): its own seconds."""

    wall: float
    cpu: float


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """Wall and process CPU seconds of one call (or the seconds it reports as `Measured`)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    if isinstance(result, Measured):
        return result.wall, result.cpu
    return time.perf_counter() - wall, time.process_time() - cpu


def time_calls(
    call: Callable[[], object],
    repeats: int = 3,
    *,
    first: bool = True,
    min_seconds: float = 1.0,
    max_repeats: int = 15,
) -> Timing:
    """Time one first call (when `first`), then at least `repeats` more: the steady figure is their median.

    Short calls are repeated until they add up to `min_seconds` (at most `max_repeats` calls), so
    a 0.1 s method gets a median of about ten calls instead of three noisy ones.
    """
    timing = Timing(None, [])
    if first:
        timing.first, timing.first_cpu = timed(call)
    while repeats and (
        len(timing.runs) < repeats or (sum(timing.runs) < min_seconds and len(timing.runs) < max_repeats)
    ):
        wall, cpu = timed(call)
        timing.runs.append(wall)
        timing.cpu_runs.append(cpu)
    return timing


def interleave(
    calls: dict[str, Callable[[], object]],
    rounds: int = 3,
    *,
    min_seconds: float = 2.0,
    max_rounds: int = 15,
) -> tuple[dict[str, Timing], list[dict[str, float]]]:
    """Round-robin timing: every round calls each callable once, so passing load hits all of them.

    At least `rounds` rounds, more while the rounds add up to less than `min_seconds`. Returns a
    Timing per name (no first call: warm up beforehand) and the seconds of each round, from which
    per-round ratios are taken: the median of those is robust to load that comes and goes.
    """
    timings = {name: Timing(None, []) for name in calls}
    per_round: list[dict[str, float]] = []
    while len(per_round) < rounds or (
        sum(sum(r.values()) for r in per_round) < min_seconds and len(per_round) < max_rounds
    ):
        this_round: dict[str, float] = {}
        for name, call in calls.items():
            wall, cpu = timed(call)
            timings[name].runs.append(wall)
            timings[name].cpu_runs.append(cpu)
            this_round[name] = wall
            this_round[name + ":cpu"] = cpu
        per_round.append(this_round)
    return timings, per_round


def round_ratio(
    per_round: list[dict[str, float]], numerator: str, denominator: str, cpu: bool = False
) -> float:
    """Median over rounds of numerator / denominator (wall seconds, or CPU seconds with `cpu`)."""
    suffix = ":cpu" if cpu else ""
    return statistics.median(r[numerator + suffix] / max(r[denominator + suffix], 1e-9) for r in per_round)


# --- trace counting -----------------------------------------------------------------------------


@dataclass
class CallRecord:
    function: str
    seconds: float
    traced: int
    rows: int


@dataclass
class TraceRecorder:
    """Every `tf.function` created while installed; those made by audit/ are wrapped to count calls."""

    functions: list[tuple[str, Any]] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)

    def total_traces(self) -> int:
        return sum(function.experimental_get_tracing_count() for _, function in self.functions)

    @contextmanager
    def window(self) -> Iterator[dict[str, Any]]:
        """Counts for the code run inside: traces, calls into audit's traced functions and their time."""
        functions_before, calls_before = len(self.functions), len(self.calls)
        traces_before = self.total_traces()
        started = time.perf_counter()
        summary: dict[str, Any] = {}
        yield summary
        elapsed = time.perf_counter() - started
        calls = self.calls[calls_before:]
        per_function: dict[str, int] = {}
        for call in calls:
            per_function[call.function] = per_function.get(call.function, 0) + call.traced
        summary.update(
            seconds=elapsed,
            traces=self.total_traces() - traces_before,
            functions_created=len(self.functions) - functions_before,
            audit_calls=len(calls),
            audit_calls_per_function={name: sum(c.function == name for c in calls) for name in per_function},
            traces_per_function=per_function,
            seconds_in_tracing_calls=sum(c.seconds for c in calls if c.traced),
            seconds_in_graph_calls=sum(c.seconds for c in calls if not c.traced),
        )
        summary["seconds_outside_graph_calls"] = (
            elapsed - summary["seconds_in_tracing_calls"] - summary["seconds_in_graph_calls"]
        )


class _CountingFunction:
    """A tf.function made by audit/: calls pass through, counted and timed, with traces per call."""

    def __init__(self, function: Any, name: str, recorder: TraceRecorder) -> None:
        self._function = function
        self._name = name
        self._recorder = recorder

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        before = self._function.experimental_get_tracing_count()
        started = time.perf_counter()
        result = self._function(*args, **kwargs)
        seconds = time.perf_counter() - started
        traced = self._function.experimental_get_tracing_count() - before
        shape = getattr(args[0], "shape", None) if args else None
        rows = int(shape[0]) if shape is not None and len(shape) > 0 and shape[0] is not None else 0
        self._recorder.calls.append(CallRecord(self._name, seconds, traced, rows))
        return result

    def __get__(self, instance: Any, owner: Any) -> Any:
        if instance is None:
            return self
        return _CountingFunction(self._function.__get__(instance, owner), self._name, self._recorder)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._function, name)


def install_trace_recorder() -> TraceRecorder:
    """Replace `tf.function` so every function made from now on is recorded (call before importing audit)."""
    recorder = TraceRecorder()
    real = tf.function

    def wrap(function: Any, module: str, target: Any) -> Any:
        recorder.functions.append((module, function))
        if not module.startswith("audit"):
            return function
        inner = target.func if isinstance(target, functools.partial) else target
        name = f"{module.rsplit('.', 1)[-1]}.{getattr(inner, '__name__', 'function')}"
        return _CountingFunction(function, name, recorder)

    def recording_function(func: Any = None, *args: Any, **kwargs: Any) -> Any:
        module = str(sys._getframe(1).f_globals.get("__name__", ""))
        if func is None:
            return lambda later: wrap(real(later, *args, **kwargs), module, later)
        return wrap(real(func, *args, **kwargs), module, func)

    tf.function = recording_function
    return recorder


# --- floors: the passes a method must do, as traced calls on prepared tensors --------------------


def _spec(model: keras.Model) -> tf.TensorSpec:
    return tf.TensorSpec((None, *tuple(model.inputs[0].shape)[1:]), tf.float32)


def _chunks(model: keras.Model, total_rows: int, rows_per_call: int | list[int]) -> list[tf.Tensor]:
    """Prepared input tensors (data is random): as many full chunks of `rows_per_call` rows as
    needed plus the remainder, or, given a list, one chunk of each size in it (their sum is used)."""
    rng = np.random.default_rng(SEED)
    shape = tuple(model.inputs[0].shape)[1:]
    if isinstance(rows_per_call, list):
        sizes = [size for size in rows_per_call if size > 0]
    else:
        per_call = max(1, min(rows_per_call, total_rows))
        sizes = [per_call] * (total_rows // per_call) + (
            [total_rows % per_call] if total_rows % per_call else []
        )
    full = tf.constant(rng.standard_normal((max(sizes), *shape)).astype(np.float32))
    return [full if size == full.shape[0] else full[:size] for size in sizes]


def prepare_forward(
    model: keras.Model, total_rows: int, rows_per_call: int | list[int]
) -> Callable[[], None]:
    """`total_rows` inference rows through one traced function, `rows_per_call` rows per call (or
    one call per size in a list).

    Traced here on one row, so the returned call is steady state; outputs are fetched to numpy,
    as a method needs them on the host.
    """
    call = tf.function(functools.partial(_infer, model), input_signature=[_spec(model)])
    chunks = _chunks(model, total_rows, rows_per_call)
    call(chunks[-1][:1])

    def run() -> None:
        for chunk in chunks:
            call(chunk).numpy()

    return run


def prepare_gradient(
    model: keras.Model, total_rows: int, rows_per_call: int, *, layer: str | None = None
) -> Callable[[], None]:
    """Forward + backward passes on `total_rows` rows: d sum(outputs) / d input (or / d `layer` output)."""
    if layer is None:
        call = tf.function(functools.partial(_input_gradient, model), input_signature=[_spec(model)])
    else:
        probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])
        call = tf.function(functools.partial(_layer_gradient, probe), input_signature=[_spec(model)])
    chunks = _chunks(model, total_rows, rows_per_call)
    call(chunks[-1][:1])

    def run() -> None:
        for chunk in chunks:
            call(chunk)

    return run


def _infer(model: keras.Model, x: tf.Tensor) -> tf.Tensor:
    return model(x, training=False)


def _input_gradient(model: keras.Model, x: tf.Tensor) -> tf.Tensor:
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(model(x, training=False))
    return tape.gradient(total, x)


def _layer_gradient(probe: keras.Model, x: tf.Tensor) -> tf.Tensor:
    with tf.GradientTape() as tape:
        activations, outputs = probe(x, training=False)
        total = tf.reduce_sum(outputs)
    return tape.gradient(total, activations)


# --- machine facts and results ------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "load_average_at_write": list(os.getloadavg()),
        "audit_code": audit_code(),
    }


def audit_code() -> dict[str, Any]:
    """Which audit/ was measured: the commit, whether audit/ differs from it, and a digest of its files."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    files = sorted((REPO / "audit").rglob("*.py"))
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()[:12]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "audit_differs_from_commit": bool(git("status", "--porcelain", "--", "audit")),
        "digest": digest,
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=float) + "\n")
    print(f"wrote {path.relative_to(REPO)}", flush=True)
    return path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the IG reference shared by ig_vs_loop.py and alibi_ig.py ----------------------------------

IG_SAMPLES = 500
IG_STEPS = 32


def reference_ig_files() -> tuple[Path, Path]:
    """The LSTM(16) model file and its (500, 24, 11) float32 eval sample, built once per run."""
    folder = RESULTS / "ig_reference"
    model_path, data_path = folder / "lstm16.keras", folder / "X.npy"
    if not (model_path.exists() and data_path.exists()):
        build_model(lstm_reference, model_path)
        rng = np.random.default_rng(SEED)
        np.save(data_path, rng.standard_normal((IG_SAMPLES, 24, 11)).astype(np.float32))
    return model_path, data_path


def alibi_python(version: str) -> Path:
    """The interpreter of the separate venv made by bench/alibi.sh for that Alibi version."""
    return REPO / "bench" / f".venv-alibi-{version}" / "bin" / "python"


class WorkerUnavailable(Exception):
    """The Alibi/scikit-learn venv is missing or its worker died; the message says why."""


class Worker:
    """bench/alibi_worker.py running in the Alibi venv, answering one JSON request per line.

    Kept alive for the whole comparison so its calls can alternate with ours round by round.
    """

    def __init__(self, version: str, name: str) -> None:
        python = alibi_python(version)
        if not python.exists():
            install_log = RESULTS / f"alibi-install-{version}.log"
            detail = install_log.read_text()[-2000:] if install_log.exists() else "bench/alibi.sh was not run"
            raise WorkerUnavailable(f"no venv at {python.parent.parent.relative_to(REPO)}: {detail}")
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.stderr_path = RESULTS / f"{name}-worker.log"
        self._stderr = self.stderr_path.open("w")
        self._process = subprocess.Popen(
            [str(python), str(REPO / "bench" / "alibi_worker.py")],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def request(self, **message: Any) -> dict[str, Any]:
        if self._process.stdin is None or self._process.stdout is None:
            raise WorkerUnavailable("worker pipes are closed")
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            self._stderr.flush()
            raise WorkerUnavailable(f"worker died: {self.stderr_path.read_text()[-3000:]}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise WorkerUnavailable(f"worker error: {answer['error']}")
        return answer

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=60)
        self._stderr.close()
