"""Method tasks are cached on content hashes: a retried flow or a re-audit does not recompute them,
a changed model file or seed does; workers load each model once per drop."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

from audit.loading import LoadedDrop, load_drop
from audit.methods import MethodContext, MethodSpec, registered_methods
from audit.methods import base as method_registry
from audit.types import AuditError, FloatArray, Importance
from flows import method_tasks
from flows.method_tasks import (
    DropInputs,
    FrozenModel,
    MethodJob,
    drop_inputs,
    method_cache_key,
    method_jobs,
    settings_digest,
)
from flows.weekly_audit import AuditResult, weekly_audit
from storage import writes
from tests.helpers import mlp_ignoring, small_registry

WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3)]


class CountedMethod:
    """weight_sum, registered under another name, counting which models it was computed on."""

    name = "counted_weight_sum"

    def __init__(self) -> None:
        self.calls: list[int] = []
        self._lock = threading.Lock()
        self._inner = registered_methods()["weight_sum"].compute

    def __call__(
        self, model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext
    ) -> Importance:
        with self._lock:
            self.calls.append(model.count_params())
        return dataclasses.replace(self._inner(model, X, y, context), method=self.name)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> CountedMethod:
    method = CountedMethod()
    spec = MethodSpec(method.name, method, needs_eval_sample=False, description="weight_sum, counted")
    monkeypatch.setitem(method_registry._REGISTRY, method.name, spec)
    return method


# --- the cache key ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded_drop(tmp_path_factory: pytest.TempPathFactory) -> LoadedDrop:
    registry = small_registry(tmp_path_factory.mktemp("key"), WEEKS[:1])
    from audit.registry import discover_drops

    return load_drop(discover_drops(registry).drops[0])


def _key(job: MethodJob) -> str:
    return method_cache_key(None, {"job": job})  # type: ignore[arg-type]


def test_cache_key_follows_content_hashes_method_settings_and_seed(loaded_drop: LoadedDrop) -> None:
    inputs = drop_inputs(loaded_drop, False, ())
    (job,) = method_jobs(loaded_drop, inputs, None, ["permutation"], random_state=0)
    assert _key(job) == _key(dataclasses.replace(job))  # deterministic
    # Where the drop lives does not change its figures...
    moved = dataclasses.replace(inputs, drop=dataclasses.replace(inputs.drop, path=Path("/elsewhere")))
    assert _key(dataclasses.replace(job, inputs=moved)) == _key(job)
    # ...but its content, the method, its options and the seed do.
    changed = [
        dataclasses.replace(job, inputs=dataclasses.replace(inputs, model_hashes=("0" * 64,))),
        dataclasses.replace(job, inputs=dataclasses.replace(inputs, sample_hash="0" * 64)),
        dataclasses.replace(job, method="perturbation"),
        dataclasses.replace(job, random_state=1),
        dataclasses.replace(job, frozen=FrozenModel(WEEKS[0], Path("old.keras"), "1" * 64)),
    ]
    with_options = dataclasses.replace(
        loaded_drop,
        config=dataclasses.replace(loaded_drop.config, method_options={"permutation": {"n_repeats": 9}}),
    )
    changed.append(dataclasses.replace(job, settings=settings_digest(with_options, "permutation")))
    keys = {_key(job), *(_key(other) for other in changed)}
    assert len(keys) == len(changed) + 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(method_tasks, "audit_code_digest", lambda: "f" * 64)  # a fix in audit/ changed it
        fixed = _key(job)
    assert fixed != _key(job)


def test_cache_key_hashes_the_options_a_method_runs_with(loaded_drop: LoadedDrop) -> None:
    """Defaults written out or left out are one cache entry; `scale = 1` and `scale = 1.0` too."""

    def digest(method: str, table: dict[str, object] | None) -> str:
        tables = {} if table is None else {method: table}
        config = dataclasses.replace(loaded_drop.config, method_options=tables)
        return settings_digest(dataclasses.replace(loaded_drop, config=config), method)

    assert digest("permutation", None) == digest("permutation", {"n_repeats": 5})
    assert digest("permutation", None) == digest("permutation", {"n_repeats": 5, "scoring": "loss"})
    assert digest("permutation", None) != digest("permutation", {"n_repeats": 6})
    assert digest("perturbation", {"scale": 1}) == digest("perturbation", {"scale": 1.0})
    assert digest("perturbation", None) == digest("perturbation", {"scale": 0.1, "n_repeats": 5})
    # another method's table does not touch this method's entry
    assert digest("perturbation", None) == settings_digest(
        dataclasses.replace(
            loaded_drop,
            config=dataclasses.replace(loaded_drop.config, method_options={"permutation": {"n_repeats": 9}}),
        ),
        "perturbation",
    )


def test_cache_key_follows_the_code_of_audit_and_of_custom_modules(
    loaded_drop: LoadedDrop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = method_tasks.audit_code_digest()
    assert digest == method_tasks.audit_code_digest() and len(digest) == 64
    monkeypatch.syspath_prepend(str(tmp_path))
    layers = tmp_path / "team_layers_for_key.py"
    layers.write_text("SCALE = 1.0\n")
    inputs = drop_inputs(loaded_drop, False, ())
    (job,) = method_jobs(loaded_drop, inputs, None, ["weight_sum"], random_state=0)
    with_module = dataclasses.replace(
        job, inputs=dataclasses.replace(inputs, custom_modules=("team_layers_for_key",))
    )
    before = _key(with_module)
    assert before != _key(job)
    layers.write_text("SCALE = 2.0\n")  # the team fixed its layer: its figures are recomputed
    assert _key(with_module) != before
    missing = dataclasses.replace(
        job, inputs=dataclasses.replace(inputs, custom_modules=("no_such_module_x",))
    )
    assert _key(missing) == _key(job)  # not found: left out (loading the drop reports it)


def test_jobs_cover_primary_copies_and_frozen_set(loaded_drop: LoadedDrop) -> None:
    inputs = dataclasses.replace(drop_inputs(loaded_drop, False, ()), model_hashes=("a" * 64, "b" * 64))
    frozen = FrozenModel(WEEKS[0], Path("previous.keras"), "c" * 64)
    jobs = method_jobs(loaded_drop, inputs, frozen, ["weight_sum", "permutation"], random_state=3)
    described = [(j.method, j.model_index, j.frozen is not None, j.model_hash[0]) for j in jobs]
    assert described == [
        ("weight_sum", 0, False, "a"),
        ("weight_sum", 1, False, "b"),  # weight methods need no sample: no frozen-set job
        ("permutation", 0, False, "a"),
        ("permutation", 1, False, "b"),
        ("permutation", 0, True, "c"),
    ]
    assert {j.random_state for j in jobs} == {3}


def test_recent_cache_is_bounded_and_loads_once_under_concurrency() -> None:
    cache: method_tasks._RecentCache[str, int] = method_tasks._RecentCache(2)
    loads: list[str] = []
    started = threading.Barrier(4)

    def load(key: str) -> int:
        loads.append(key)
        return len(loads)

    def get_a() -> None:
        started.wait()
        cache.get_or_load("a", lambda: load("a"))

    threads = [threading.Thread(target=get_a) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == ["a"]  # four concurrent tasks wanting one model: one load
    cache.get_or_load("b", lambda: load("b"))
    cache.get_or_load("c", lambda: load("c"))
    assert len(cache) == 2
    cache.get_or_load("a", lambda: load("a"))  # evicted (least recently used): loaded again
    assert loads == ["a", "b", "c", "a"]


def test_a_worker_refuses_a_drop_whose_files_changed(loaded_drop: LoadedDrop) -> None:
    inputs = drop_inputs(loaded_drop, False, ())
    stale = dataclasses.replace(inputs, model_hashes=("0" * 64,))
    with pytest.raises(AuditError, match="changed while it was audited"):
        method_tasks._load_inputs(stale)
    assert method_tasks._load_inputs(inputs).facts.content_hash == inputs.model_hashes[0]


# --- the flow -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_rerun_after_a_failed_store_reuses_figures_and_changes_recompute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: CountedMethod
) -> None:
    registry = small_registry(tmp_path, WEEKS)
    mlp_ignoring(4, 3, seed=7).save(registry / "2014-11-03" / "model_seed1.keras")  # a reseeded copy
    run = {
        "registry": str(registry),
        "db_url": f"sqlite:///{tmp_path / 'a.db'}",
        "out_dir": str(tmp_path / "out"),
        "methods": [counted.name],
    }

    def broken_store(*args: object, **kwargs: object) -> None:
        raise AuditError("disk full")  # not transient: no retries, the drops fail at once

    with monkeypatch.context() as patch:
        patch.setattr(writes, "record_success", broken_store)
        state = weekly_audit(**run, return_state=True)
    assert state.is_failed()
    assert len(counted.calls) == 3  # week 1, week 2 and its copy

    result = weekly_audit(**run)  # the retry: every figure comes from the cache
    assert isinstance(result, AuditResult) and result.audited_weeks == tuple(WEEKS)
    assert len(counted.calls) == 3

    weekly_audit(**run, week=WEEKS[1])  # a re-audit of the same week: nothing recomputed
    assert len(counted.calls) == 3

    weekly_audit(**run, week=WEEKS[1], random_state=1)  # another seed: model and copy recomputed
    assert len(counted.calls) == 5

    mlp_ignoring(4, 3, seed=9).save(registry / "2014-11-03" / "model.keras")  # retrained in place
    weekly_audit(**run, week=WEEKS[1])
    assert len(counted.calls) == 6  # the changed model only: its unchanged copy comes from the cache


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_failed_method_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def flaky(model: keras.Model, X: object, y: object, context: MethodContext) -> Importance:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("out of memory")
        return Importance("flaky", context.feature_names, np.ones(len(context.feature_names)))

    monkeypatch.setitem(method_registry._REGISTRY, "flaky", MethodSpec("flaky", flaky, False, "fails once"))
    registry = small_registry(tmp_path, WEEKS[:1])
    run = {"registry": str(registry), "out_dir": str(tmp_path / "out"), "methods": ["flaky"]}
    assert isinstance(weekly_audit(**run), AuditResult)  # the method failed; the audit did not
    weekly_audit(**run, week=WEEKS[0])
    weekly_audit(**run, week=WEEKS[0])
    assert len(calls) == 2  # failed once (not cached), then ok (cached)


def test_drop_inputs_hash_every_model(loaded_drop: LoadedDrop) -> None:
    inputs: DropInputs = drop_inputs(loaded_drop, True, ("team_layers",))
    assert inputs.model_hashes == (loaded_drop.facts.content_hash,)
    assert inputs.sample_hash == loaded_drop.sample.content_hash  # type: ignore[union-attr]
    assert (inputs.trust_model_code, inputs.custom_modules) == (True, ("team_layers",))
