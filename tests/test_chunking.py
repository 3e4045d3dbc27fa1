"""Work is chunked under a budget: rows per model call, copies split by samples, reductions per chunk."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from audit.forward import (
    MAX_ROWS_PER_CALL,
    Predictor,
    copies_by_chunk,
    per_sample_by_job,
    rows_per_call,
)
from audit.gradients import rows_per_chunk
from audit.methods.grad_cam import compute_grad_cam
from audit.methods.integrated_gradients import compute_integrated_gradients
from audit.methods.permutation import compute_permutation
from audit.methods.perturbation import compute_perturbation
from audit.methods.saliency import compute_gradient_x_input, compute_saliency
from audit.targets import OutputTarget
from audit.types import Task


def _identity(row_shape: tuple[int, ...]) -> keras.Model:
    """outputs = the flattened input: exposes exactly which copies the model was given."""
    inputs = keras.Input(row_shape)
    return keras.Model(inputs, keras.layers.Flatten()(inputs))


def test_rows_per_call_respects_the_budget_and_the_row_cap() -> None:
    assert rows_per_call((24, 11)) == MAX_ROWS_PER_CALL == 8192  # 64 MiB would be 63,550 rows
    assert rows_per_call((24, 11), chunk_bytes=24 * 11 * 4 * 100) == 100
    assert rows_per_call((4,), chunk_bytes=1) == 1
    assert rows_per_call((4,), chunk_bytes=1, batch_size=7) == 7  # an explicit batch size wins
    # gradient calls: samples of `steps` path points each, at most MAX_ROWS_PER_CALL points per call
    assert rows_per_chunk((24, 11), 16 * 2**20, points_per_row=32) == MAX_ROWS_PER_CALL // 32
    assert rows_per_chunk((24, 11), 24 * 11 * 4 * 32 * 3, points_per_row=32) == 3
    assert rows_per_chunk((24, 11), 1, points_per_row=4096) == 1


def test_whole_copies_share_a_call_and_big_copies_are_split_by_samples() -> None:
    X = np.random.default_rng(0).normal(size=(10, 3, 2))
    jobs = [(0, 0), (0, 1), (1, 0)]
    calls: list[tuple[tuple[int, int], slice]] = []

    def replace(job: tuple[int, int], rows: slice) -> np.ndarray:
        calls.append((job, rows))
        return np.full((rows.stop - rows.start, 3), 100.0 * (job[0] + 1) + job[1])

    whole = list(copies_by_chunk(X, jobs, replace, rows_per_call=25))  # two copies of 10 rows per call
    assert [list(chunk.jobs) for chunk in whole] == [jobs[:2], jobs[2:]]
    assert all(chunk.rows == slice(0, 10) for chunk in whole)
    assert whole[0].base is whole[1].base  # X's rows are converted once for all chunks

    calls.clear()
    split = list(copies_by_chunk(X, jobs, replace, rows_per_call=4))
    assert [(list(chunk.jobs), chunk.rows) for chunk in split] == [
        ([job], rows) for job in jobs for rows in (slice(0, 4), slice(4, 8), slice(8, 10))
    ]
    assert calls == [(job, rows) for job in jobs for rows in (slice(0, 4), slice(4, 8), slice(8, 10))]
    assert max(chunk.n_rows * len(chunk.jobs) for chunk in split) <= 4


@pytest.mark.parametrize("rows", [1000, 7, 3])
def test_copies_are_assembled_exactly_in_the_graph(rows: int) -> None:
    X = np.random.default_rng(1).normal(size=(12, 5, 3))
    predictor = Predictor(_identity((5, 3)), batch_size=rows)
    jobs = [(0, 2), (1, 0), (2, 1)]
    new_values = np.random.default_rng(2).normal(size=(len(jobs), 12, 5))

    def replace(job: tuple[int, int], rows: slice) -> np.ndarray:
        return new_values[job[0], rows]

    got = {job: np.empty((12, 15)) for job in jobs}
    for copies, outputs in predictor.predict_copies(X, jobs, replace):
        for job, output in zip(copies.jobs, outputs, strict=True):
            got[job][copies.rows] = output
    for job in jobs:
        expected = X.astype(np.float32).copy()
        expected[..., job[1]] = new_values[job[0]]
        np.testing.assert_array_equal(got[job], expected.reshape(12, -1))


def test_per_sample_figures_are_joined_across_split_copies() -> None:
    X = np.arange(10.0).reshape(10, 1)
    jobs = [(0, 0), (1, 0)]
    chunks = [
        (copies, np.full((len(copies.jobs), copies.n_rows), float(copies.jobs[0][0])) + X[copies.rows, 0])
        for copies in copies_by_chunk(X, jobs, lambda job, rows: 0.0, rows_per_call=4)
    ]
    joined = list(per_sample_by_job(chunks, 10))
    assert [job for job, _ in joined] == jobs
    np.testing.assert_array_equal(joined[1][1], np.arange(10.0) + 1)


def test_permutation_and_perturbation_do_not_depend_on_the_split() -> None:
    # identity model: outputs are the inputs, so float32 rounding cannot differ between call sizes
    model = _identity((6, 3))
    X = np.random.default_rng(3).normal(size=(50, 6, 3))
    names = ("a", "b", "c")
    for compute in (compute_permutation, compute_perturbation):
        whole = compute(model, X, feature_names=names, n_repeats=2, random_state=4)  # type: ignore[operator]
        split = compute(model, X, feature_names=names, n_repeats=2, random_state=4, batch_size=7)  # type: ignore[operator]
        np.testing.assert_allclose(split.repeats, whole.repeats, rtol=1e-12)


def test_gradient_methods_reduce_chunk_by_chunk_to_the_same_numbers() -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 3))
    hidden = keras.layers.Conv1D(4, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(hidden)))
    target = OutputTarget(Task.CLASSIFICATION, "softmax")
    X = np.random.default_rng(5).normal(size=(40, 8, 3))
    names = ("a", "b", "c")
    small = 8 * 3 * 4 * 6  # six samples per gradient call
    for compute in (compute_saliency, compute_gradient_x_input):
        whole = compute(model, X, feature_names=names, target=target)
        chunked = compute(model, X, feature_names=names, target=target, chunk_bytes=small)
        np.testing.assert_allclose(chunked.values, whole.values, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(chunked.std, whole.std, rtol=1e-6, atol=1e-9)  # type: ignore[arg-type]
        np.testing.assert_allclose(chunked.profile, whole.profile, rtol=1e-6, atol=1e-9)  # type: ignore[arg-type]
    ig_whole = compute_integrated_gradients(model, X, feature_names=names, target=target, steps=4)
    ig_chunked = compute_integrated_gradients(
        model, X, feature_names=names, target=target, steps=4, chunk_bytes=small * 4
    )
    np.testing.assert_allclose(ig_chunked.values, ig_whole.values, rtol=1e-6)
    np.testing.assert_allclose(ig_chunked.profile, ig_whole.profile, rtol=1e-6, atol=1e-9)  # type: ignore[arg-type]
    for key in ("completeness_median_abs_delta", "completeness_max_abs_delta"):
        assert ig_chunked.parameters[key] == pytest.approx(ig_whole.parameters[key], rel=1e-4, abs=1e-7)
    cam_whole = compute_grad_cam(model, X, target=target)
    cam_chunked = compute_grad_cam(model, X, target=target, chunk_bytes=small)
    np.testing.assert_allclose(cam_chunked.profile, cam_whole.profile, rtol=1e-6, atol=1e-9)  # type: ignore[arg-type]
    assert cam_chunked.parameters["layer_steps"] == 6


def test_integrated_gradients_baselines_are_built_per_chunk() -> None:
    # a linear model: IG = (x - b) * w exactly, whichever baseline and however the samples are chunked
    w = np.array([1.5, -2.0])
    inputs = keras.Input((2,))
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([w.astype(np.float32)[:, None], np.zeros(1, np.float32)])
    X = np.random.default_rng(6).normal(size=(30, 2)) + 3.0
    given = np.random.default_rng(7).normal(size=(30, 2))
    cases = {"zeros": np.zeros(2), "mean": X.mean(axis=0), "given": given}
    for name, baseline in cases.items():
        option = given if name == "given" else name
        result = compute_integrated_gradients(
            model,
            X,
            feature_names=("a", "b"),
            baseline=option,  # type: ignore[arg-type]
            steps=2,
            chunk_bytes=2 * 4 * 2 * 7,  # 7 samples of 2 path points per call
        )
        np.testing.assert_allclose(result.values, np.abs((X - baseline) * w).mean(axis=0), rtol=1e-5)
