"""Drops in an MLflow Model Registry (``--registry mlflow://<name>``) against a real ``mlflow server``
on 127.0.0.1 (SQLite backend, local artifact root; tests/source_servers.py): one version per weekly drop,
the same figures as the same models in a folder, a later version audited alone, reseeded copies,
aliases, and the bad inputs of docs/reliability.md (a token-protected server included)."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from flows.cli import main
from flows.method_tasks import METHOD_CACHE_DIR
from flows.sources import STAGING_DIR
from flows.weekly_audit import AuditResult, weekly_audit
from storage.session import make_engine
from tests.helpers import free_port, linear_model, mlp_ignoring, small_registry, table_counts
from tests.source_checks import assert_not_leaked, nothing_stored
from tests.source_servers import MlflowServer, token_proxy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3), dt.date(2014, 11, 10)]
LATER = dt.date(2014, 11, 17)
METHODS = ["weight_sum", "permutation", "integrated_gradients"]
FIGURES = "SELECT week, method, feature, value FROM importance_history ORDER BY week, method, feature"
#: MLflow infers pip requirements by importing the model in a new Python process (TensorFlow: many
#: seconds per version); naming them skips that.
REQUIREMENTS = ["keras"]


@pytest.fixture
def tracking(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowServer:
    """The MLflow server, named by MLFLOW_TRACKING_URI (as a training script's environment would)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    return mlflow_server


def _name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def log_keras_version(
    name: str, model: keras.Model, week: dt.date, eval_file: Path | None, **tags: str
) -> int:
    """What a weekly training script does: log the model (and its eval sample) and register it."""
    with mlflow.start_run():
        if eval_file is not None:
            mlflow.log_artifact(str(eval_file))  # the run's root: the eval sample's fallback place
        info = mlflow.keras.log_model(
            model, name="model", registered_model_name=name, pip_requirements=REQUIREMENTS
        )
    version = int(info.registered_model_version)
    client = MlflowClient()
    for key, value in {"week": week.isoformat(), **tags}.items():
        client.set_model_version_tag(name, str(version), key, value)
    return version


def log_folder_version(name: str, folder: Path, week: dt.date) -> int:
    """A drop folder that follows the registry contract, logged as artifacts and registered."""
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), artifact_path="drop")
    client = MlflowClient()
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    found = client.create_model_version(name, source=f"{run.info.artifact_uri}/drop", run_id=run.info.run_id)
    client.set_model_version_tag(name, found.version, "week", week.isoformat())
    return int(found.version)


def _figures(db_url: str) -> tuple[list[tuple[str, ...]], np.ndarray]:
    engine = make_engine(db_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(FIGURES)).all()
    engine.dispose()
    return [(str(r.week), r.method, r.feature) for r in rows], np.array([r.value for r in rows], float)


def _cache_entries(out: Path) -> dict[Path, float]:
    return {path: path.stat().st_mtime for path in (out / METHOD_CACHE_DIR).rglob("*") if path.is_file()}


def test_weekly_versions_give_the_folder_figures_and_a_new_version_is_audited_alone(
    tracking: MlflowServer, tmp_path: Path
) -> None:
    registry = small_registry(tmp_path, [*WEEKS, LATER])
    name = _name("pm25")
    for week in WEEKS:
        folder = registry / week.isoformat()
        if week == WEEKS[1]:  # a registry-contract folder: the eval sample inside the model's folder
            log_folder_version(name, folder, week)
        else:  # mlflow.keras.log_model, the eval sample at the run's root
            log_keras_version(
                name, keras.saving.load_model(folder / "model.keras"), week, folder / "eval.npz"
            )
    later = registry / LATER.isoformat()
    (later.parent.parent / "later").mkdir()
    later.rename(later.parent.parent / "later" / LATER.isoformat())  # not in the folder audit yet
    folder_db, mlflow_db = f"sqlite:///{tmp_path / 'folder.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"

    local = weekly_audit(
        registry=str(registry), db_url=folder_db, out_dir=str(tmp_path / "f"), methods=METHODS
    )
    remote = weekly_audit(registry=f"mlflow://{name}", db_url=mlflow_db, out_dir=str(out), methods=METHODS)

    assert isinstance(local, AuditResult) and isinstance(remote, AuditResult)
    assert remote.audited_weeks == tuple(WEEKS)
    keys, values = _figures(folder_db)
    mlflow_keys, mlflow_values = _figures(mlflow_db)
    assert mlflow_keys == keys and keys
    np.testing.assert_allclose(mlflow_values, values, rtol=1e-6)
    with make_engine(mlflow_db).connect() as connection:
        runs = connection.execute(
            sa.text(
                "SELECT d.model_name, r.id, r.source_uri, r.mlflow_version, r.mlflow_run_id, r.source_hash"
                " FROM audit_runs r JOIN model_drops d ON d.id = r.drop_id ORDER BY r.id"
            )
        ).all()
    assert {run.model_name for run in runs} == {name}
    assert [(run.source_uri, run.mlflow_version) for run in runs] == [
        (f"mlflow://{name}/{version}", version) for version in (1, 2, 3)
    ]
    assert all(len(run.mlflow_run_id) == 32 and len(run.source_hash) == 64 for run in runs)
    assert remote.report_path is not None
    html = remote.report_path.read_text(encoding="utf-8")
    assert f"mlflow://{name}/3" in html and "MLflow version 3" in html

    staged_before = set((out / STAGING_DIR).glob("*/*"))
    cache_before = _cache_entries(out)
    log_keras_version(
        name,
        keras.saving.load_model(tmp_path / "later" / LATER.isoformat() / "model.keras"),
        LATER,
        tmp_path / "later" / LATER.isoformat() / "eval.npz",
    )
    newer = weekly_audit(registry=f"mlflow://{name}", db_url=mlflow_db, out_dir=str(out), methods=METHODS)

    assert isinstance(newer, AuditResult) and newer.audited_weeks == (LATER,)
    with make_engine(mlflow_db).connect() as connection:
        ids = connection.execute(sa.text("SELECT id FROM audit_runs ORDER BY id")).scalars().all()
    assert ids[:3] == [run.id for run in runs] and len(ids) == 4  # the first three: not audited again
    staged_after = set((out / STAGING_DIR).glob("*/*"))
    assert staged_before < staged_after and len(staged_after - staged_before) == 1  # only version 4
    cache_after = _cache_entries(out)
    assert {path: cache_after[path] for path in cache_before} == cache_before  # no figure recomputed
    assert len(cache_after) > len(cache_before)  # ... but week 4's


class Echo(mlflow.pyfunc.PythonModel):
    """A pickle-only pyfunc model: what the auditor must refuse without unpickling it."""

    def predict(self, context: object, model_input: object) -> object:
        return model_input


def test_bad_versions_fail_their_drop_with_the_uri_and_the_fix(
    tracking: MlflowServer, tmp_path: Path
) -> None:
    name = _name("bad")
    X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", X=X, y=X @ np.arange(1.0, 5.0))
    log_keras_version(name, linear_model([1.0, 2.0, 3.0, 4.0]), WEEKS[0], tmp_path / "eval.npz")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.txt").write_text("the model was not saved")
    log_folder_version(name, notes, WEEKS[1])  # a version without a model file
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Echo(), registered_model_name=name, pip_requirements=[]
        )
    MlflowClient().set_model_version_tag(
        name, str(info.registered_model_version), "week", WEEKS[2].isoformat()
    )
    db_url = f"sqlite:///{tmp_path / 'a.db'}"

    state = weekly_audit(
        registry=f"mlflow://{name}",
        db_url=db_url,
        out_dir=str(tmp_path / "out"),
        methods=["weight_sum"],
        return_state=True,
    )

    assert state.is_failed() and "2 of 3 drop(s) failed" in (state.message or "")
    with make_engine(db_url).connect() as connection:
        runs = connection.execute(
            sa.text("SELECT status, error, source_uri FROM audit_runs ORDER BY id")
        ).all()
    assert [run.status for run in runs] == ["succeeded", "failed", "failed"]
    assert runs[1].source_uri == f"mlflow://{name}/2"
    assert runs[1].error.startswith(
        f"mlflow://{name}/2: no model file in the version's artifacts (found: README.txt)"
    )
    assert "mlflow.keras.log_model" in runs[1].error
    assert runs[2].error.startswith(
        f"mlflow://{name}/3: not a Keras model (MLflow flavours: python_function); log the Keras model with "
        "mlflow.keras.log_model"
    )
    counts = table_counts(make_engine(db_url))
    assert counts["importances"] == 4 and counts["method_results"] == 1  # the good drop's only
    assert "\n" not in runs[1].error + runs[2].error


def test_reseeded_versions_and_an_alias(tracking: MlflowServer, tmp_path: Path) -> None:
    name = _name("reseeded")
    X = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", X=X)
    first = log_keras_version(name, mlp_ignoring(4, 3, seed=1), WEEKS[0], tmp_path / "eval.npz")
    copy = log_keras_version(name, mlp_ignoring(4, 3, seed=2), WEEKS[0], None, reseed="2")
    champion = log_keras_version(name, mlp_ignoring(4, 3, seed=3), WEEKS[1], tmp_path / "eval.npz")
    successor = log_keras_version(name, mlp_ignoring(4, 3, seed=4), WEEKS[2], tmp_path / "eval.npz")
    client = MlflowClient()
    db_url = f"sqlite:///{tmp_path / 'a.db'}"
    out = str(tmp_path / "out")

    whole = weekly_audit(registry=f"mlflow://{name}", db_url=db_url, out_dir=out, methods=["weight_sum"])
    assert isinstance(whole, AuditResult) and whole.audited_weeks == tuple(WEEKS)
    with make_engine(db_url).connect() as connection:
        copies = connection.execute(
            sa.text("SELECT DISTINCT kind, label FROM model_importances WHERE kind = 'copy'")
        ).all()
        primary = (
            connection.execute(sa.text("SELECT mlflow_version FROM audit_runs ORDER BY id")).scalars().all()
        )
    assert copies == [("copy", f"model_v{copy}.keras")] and primary == [first, champion, successor]

    client.set_registered_model_alias(name, "champion", str(champion))
    alias_db = f"sqlite:///{tmp_path / 'alias.db'}"
    held = weekly_audit(
        registry=f"mlflow://{name}@champion", db_url=alias_db, out_dir=out, methods=["weight_sum"]
    )
    assert isinstance(held, AuditResult) and held.audited_weeks == (WEEKS[1],)
    client.set_registered_model_alias(name, "champion", str(successor))  # MLflow forgets version 3 held it
    moved = weekly_audit(
        registry=f"mlflow://{name}@champion", db_url=alias_db, out_dir=out, methods=["weight_sum"], redo=True
    )
    # version 3 is still audited: the auditor's own runs recorded that it held the alias
    assert isinstance(moved, AuditResult) and moved.audited_weeks == (WEEKS[1], WEEKS[2])
    with make_engine(alias_db).connect() as connection:
        names = connection.execute(sa.text("SELECT DISTINCT model_name FROM model_drops")).scalars().all()
        aliases = connection.execute(
            sa.text(
                "SELECT mlflow_version, mlflow_aliases FROM audit_runs WHERE status = 'succeeded' ORDER BY id"
            )
        ).all()
    assert names == [name]
    assert [tuple(row) for row in aliases] == [(champion, "champion"), (successor, "champion")]


def test_server_and_model_errors_are_one_line(
    tracking: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = _name("known")
    X = np.random.default_rng(2).normal(size=(8, 4)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", X=X)
    log_keras_version(name, linear_model([1.0, 0.0, 2.0, 0.0]), WEEKS[0], tmp_path / "eval.npz")
    out = tmp_path / "out"
    db_url = f"sqlite:///{out / 'drift-audit.db'}"

    def run(*extra: str) -> str:
        code = main(["run", "--out", str(out), "--methods", "weight_sum", "--quiet", *extra])
        printed = capsys.readouterr()
        assert code == 1, printed.err
        lines = [line for line in printed.err.splitlines() if line.startswith("drift-audit: error:")]
        assert len(lines) == 1
        return lines[0]

    missing = run("--registry", "mlflow://no-such-model")
    assert missing.startswith(
        f"drift-audit: error: registry mlflow://no-such-model: no registered model 'no-such-model' on "
        f"{tracking.url}; registered models: "
    )
    assert repr(name) in missing
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = run("--registry", f"mlflow://{name}", "--mlflow-tracking-uri", closed)
    assert (
        f"cannot reach the MLflow tracking server {closed}" in unreachable
        and "MLFLOW_TRACKING_URI" in unreachable
    )
    assert nothing_stored(out)  # no drop was listed: nothing stored

    token = "tok-" + uuid.uuid4().hex
    with token_proxy(tracking.url, token) as proxy:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
        needs = run("--registry", f"mlflow://{name}")
        assert (
            f"the MLflow server {proxy.url} needs a token (401 Unauthorized); set MLFLOW_TRACKING_TOKEN"
            in needs
        )
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "not-" + token)
        refused = run("--registry", f"mlflow://{name}")
        assert "refused the token in MLFLOW_TRACKING_TOKEN" in refused and "not-" + token not in refused
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
        assert (
            main(["run", "--registry", f"mlflow://{name}", "--out", str(out), "--methods", "weight_sum"]) == 0
        )
        printed = capsys.readouterr()
        assert f"Bearer {token}" in proxy.seen  # the client sent it; the proxy let it through
    assert_not_leaked(token, db_url=db_url, out_dir=out, printed=printed.out + printed.err)
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == token  # read from the environment only
