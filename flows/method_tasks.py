"""One Prefect task per (drop, model, method), cached on what its figures depend on.

The flow submits `method_task` once per method for the drop's primary model, for each reseeded copy
and for the previous drop's model on this drop's sample (the frozen set); the task runner runs them
concurrently (threads by default, Dask workers with ``--task-runner dask``).

Keras models are never shipped between processes: a `MethodJob` names its inputs (the drop, which
model, content hashes, method, seed) and the worker loads them through a small per-process cache
keyed by those content hashes, so a worker loads each model once per drop, not once per method.
The flow primes the same cache when it loads the drop, so the default (thread) runner loads nothing
twice.

Caching across runs: a method task's result is persisted (pickled) under a key made of the model's
and the eval sample's content hashes, the method, its options and the other drop settings that
change its figures, the seed, a digest of the code that computes them (every ``audit/**/*.py`` file,
this module, and the source of the drop's ``custom_modules``) and the Keras and TensorFlow versions.
A flow retried after a failed store, or a re-audit of the same week, reuses the figures instead of
recomputing them; a changed model file, sample, option, seed or code (a fix in a method) recomputes.
A method's own failure is a result (status ``failed``, stored and reported), never an exception, so
it is never retried; it is not cached either, so the next run tries again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import keras
import tensorflow as tf
from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from prefect.transactions import get_transaction

import audit
from audit.loading import LoadedDrop, load_drop, load_model
from audit.model_formats import model_content_hash
from audit.runner import method_context, run_method, select_methods
from audit.types import AuditError, Drop, MethodOutcome, MethodStatus, ModelEvaluation
from flows.cache_layout import METHOD_CACHE_DIR as METHOD_CACHE_DIR

#: How long a cached figure is reused. Older entries are recomputed (and overwritten) when asked for;
#: the cache folder can be deleted at any time, which only costs recomputation.
METHOD_CACHE_EXPIRATION = dt.timedelta(days=30)
#: Drops (and previous-week models) kept loaded per process: the current one and the one before.
LOADED_PER_PROCESS = 2


@dataclass(frozen=True)
class DropInputs:
    """What identifies a drop's inputs across processes: the drop, how to load it, its content hashes."""

    drop: Drop
    trust_model_code: bool
    custom_modules: tuple[str, ...]
    #: Content hash of each model of the drop, in `Drop.model_paths` order (the primary first).
    model_hashes: tuple[str, ...]
    #: Content hash of the eval file, None without one.
    sample_hash: str | None


@dataclass(frozen=True)
class FrozenModel:
    """The previous drop's model, to be scored on this drop's eval sample (the frozen set)."""

    week: dt.date
    path: Path
    content_hash: str
    #: Its loss and metric on this drop's sample (None: no targets, or it failed; see flows.tasks).
    evaluation: ModelEvaluation | None = None


@dataclass(frozen=True)
class MethodJob:
    """One method on one model of a drop: everything a worker needs to compute it, and nothing heavy."""

    inputs: DropInputs
    method: str
    random_state: int
    #: Digest of the drop's settings that change this method's figures (see `settings_digest`).
    settings: str
    #: Which model of the drop is scored: 0 the primary, i >= 1 the i-th reseeded copy.
    model_index: int = 0
    #: Set for the frozen set: the previous drop's model is scored instead, on this drop's sample.
    frozen: FrozenModel | None = None

    @property
    def model_hash(self) -> str:
        return self.frozen.content_hash if self.frozen else self.inputs.model_hashes[self.model_index]

    @property
    def label(self) -> str:
        """How the task run is named in Prefect, e.g. ``2014-11-10 permutation model_seed1.keras``."""
        model = (
            f"previous model {self.frozen.week.isoformat()}"
            if self.frozen
            else self.inputs.drop.model_paths[self.model_index].name
        )
        return f"{self.inputs.drop.week.isoformat()} {self.method} {model}"


def drop_inputs(loaded: LoadedDrop, trust_model_code: bool, custom_modules: tuple[str, ...]) -> DropInputs:
    """The inputs of a drop the flow has loaded; remembers `loaded` in this process's cache.

    Hashes the copies' files (the primary's and the sample's hashes were taken while loading).
    """
    copies = tuple(model_content_hash(path) for path in loaded.drop.model_paths[1:])
    inputs = DropInputs(
        drop=loaded.drop,
        trust_model_code=trust_model_code,
        custom_modules=custom_modules,
        model_hashes=(loaded.facts.content_hash, *copies),
        sample_hash=None if loaded.sample is None else loaded.sample.content_hash,
    )
    _DROPS.put(inputs, loaded)
    return inputs


def remember_model(model: keras.Model, frozen: FrozenModel, inputs: DropInputs) -> None:
    """Keep a previous-week model the flow has loaded, so tasks in this process do not load it again."""
    _MODELS.put(_model_key(frozen, inputs), model)


def settings_digest(loaded: LoadedDrop, method: str) -> str:
    """A digest of what, besides the model and sample files and the seed, changes `method`'s figures:
    its options (as it runs with them: checked, typed, every default filled, so ``n_repeats = 5``
    written out and left to its default are one entry), the explained output, the feature names and
    how the sample was cut (NaN rows dropped, subsampling)."""
    sample = loaded.sample
    (spec,) = select_methods([method])
    settings = {
        "options": dataclasses.asdict(method_context(loaded, spec).options),
        "target": dataclasses.asdict(loaded.target),
        "features": loaded.feature_names,
        "rows": None if sample is None else [sample.n_samples, sample.n_dropped_rows, sample.sampling_seed],
    }
    return _digest(settings)


def method_jobs(
    loaded: LoadedDrop,
    inputs: DropInputs,
    frozen: FrozenModel | None,
    methods: list[str] | None,
    random_state: int,
) -> tuple[MethodJob, ...]:
    """Every method task of a drop: each method on the primary model and on each copy, and each data
    method on the previous drop's model (when there is a frozen set)."""
    jobs = []
    for spec in select_methods(methods):
        job = MethodJob(inputs, spec.name, random_state, settings_digest(loaded, spec.name))
        jobs.append(job)
        jobs.extend(dataclasses.replace(job, model_index=i) for i in range(1, len(inputs.model_hashes)))
        if frozen is not None and spec.needs_eval_sample:
            jobs.append(dataclasses.replace(job, frozen=frozen))
    return tuple(jobs)


def method_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The cache key of a method task: the content hashes of the model and the sample, the method,
    the settings that change its figures, the seed, the code that computes them (`audit_code_digest`,
    `custom_modules_digest`) and the Keras and TensorFlow versions. Which drops use a key is
    recorded beside the cache (`flows.cache_layout.record_drop_keys`), for `drift-audit prune`."""
    return job_cache_key(parameters["job"])


def job_cache_key(job: MethodJob) -> str:
    """The cache key of `job` (`method_cache_key`)."""
    return _digest(
        {
            "code": audit_code_digest(),
            "custom_modules": custom_modules_digest(job.inputs.custom_modules),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "model": job.model_hash,
            "sample": job.inputs.sample_hash,
            "method": job.method,
            "settings": job.settings,
            "random_state": job.random_state,
        }
    )


@functools.cache
def audit_code_digest() -> str:
    """A digest of the bytes of every ``audit/**/*.py`` file and of this module, taken once per
    process: a fix in a method or in `audit.forward` changes it, so cached figures are recomputed."""
    root = Path(audit.__file__).parent
    sources = [(path.relative_to(root).as_posix(), path) for path in sorted(root.rglob("*.py"))]
    sources.append(("flows/method_tasks.py", Path(__file__)))
    digest = hashlib.sha256()
    for label, path in sources:
        digest.update(label.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def custom_modules_digest(modules: tuple[str, ...]) -> str:
    """A digest of the source file of each of the drop's ``custom_modules`` (its layers shape the
    figures); a module that cannot be found is left out (loading the drop reports it)."""
    digest = hashlib.sha256()
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        origin = None if spec is None else spec.origin
        if origin is None or not Path(origin).is_file():
            continue
        digest.update(name.encode() + b"\0" + Path(origin).read_bytes() + b"\0")
    return digest.hexdigest()


@task(
    name="method",
    task_run_name="{job.label}",
    cache_key_fn=method_cache_key,
    cache_expiration=METHOD_CACHE_EXPIRATION,
    persist_result=True,
    result_serializer="pickle",
)
def method_task(job: MethodJob) -> MethodOutcome:
    """Run one method on one model of a drop. Its own failure is an outcome (not retried, not cached);
    a model or sample that cannot be loaded here raises and fails the drop."""
    (spec,) = select_methods([job.method])
    outcome = run_method(_scored_drop(job), spec, random_state=job.random_state)
    logger = get_run_logger()
    if outcome.status is MethodStatus.OK:
        logger.info("%s: done in %.1f s", job.label, outcome.seconds)
    else:
        logger.warning("%s %s: %s", job.label, outcome.status, outcome.reason)
    if outcome.status is MethodStatus.FAILED:
        _do_not_cache()
    return outcome


def _do_not_cache() -> None:
    """Keep this task's result out of the cache: a failure may be transient (memory, a fixed bug)."""
    transaction = get_transaction()
    if transaction is not None:
        transaction.write_on_commit = False


def _scored_drop(job: MethodJob) -> LoadedDrop:
    """The drop with the job's model in place of the primary one, from this process's cache."""
    loaded = _DROPS.get_or_load(job.inputs, lambda: _load_inputs(job.inputs))
    if job.frozen is not None:
        model = _MODELS.get_or_load(_model_key(job.frozen, job.inputs), lambda: _load_frozen(job))
        return dataclasses.replace(loaded, model=model, copies=())
    if job.model_index == 0:
        return loaded
    return dataclasses.replace(loaded, model=loaded.copies[job.model_index - 1], copies=())


def _load_inputs(inputs: DropInputs) -> LoadedDrop:
    loaded = load_drop(
        inputs.drop, trust_model_code=inputs.trust_model_code, custom_modules=inputs.custom_modules
    )
    copies = tuple(model_content_hash(path) for path in inputs.drop.model_paths[1:])
    found = (loaded.facts.content_hash, *copies)
    sample_hash = None if loaded.sample is None else loaded.sample.content_hash
    if found != inputs.model_hashes or sample_hash != inputs.sample_hash:
        raise AuditError(
            f"{inputs.drop.path}: the drop's files changed while it was audited; run the audit again"
        )
    return loaded


def _load_frozen(job: MethodJob) -> keras.Model:
    frozen = job.frozen
    if frozen is None:  # pragma: no cover - only called for frozen-set jobs
        raise ValueError(f"{job.label} is not a frozen-set job")
    if model_content_hash(frozen.path) != frozen.content_hash:
        raise AuditError(f"{frozen.path}: the model file changed while it was audited; run the audit again")
    return load_model(
        frozen.path, trust_model_code=job.inputs.trust_model_code, custom_modules=job.inputs.custom_modules
    )


def _model_key(frozen: FrozenModel, inputs: DropInputs) -> tuple[Path, str, bool, tuple[str, ...]]:
    return (frozen.path, frozen.content_hash, inputs.trust_model_code, inputs.custom_modules)


def _digest(value: Mapping[str, object]) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _RecentCache(Generic[K, V]):
    """The last few values loaded in this process, by key; one load at a time (so concurrent tasks
    wanting the same model wait for one load instead of each loading it)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._values: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            value = load()
            self._store(key, value)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._store(key, value)

    def __len__(self) -> int:
        return len(self._values)

    def _store(self, key: K, value: V) -> None:
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self._size:
            self._values.popitem(last=False)


_DROPS: _RecentCache[DropInputs, LoadedDrop] = _RecentCache(LOADED_PER_PROCESS)
_MODELS: _RecentCache[tuple[Path, str, bool, tuple[str, ...]], keras.Model] = _RecentCache(LOADED_PER_PROCESS)
