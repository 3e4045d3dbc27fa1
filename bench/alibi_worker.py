"""The other side of the comparisons, run by bench/.venv-alibi-<version>/bin/python, not the project venv.

It reads one JSON request per line on stdin and answers one JSON line on stdout, so the
orchestrating script (alibi_ig.py, permutation_vs_sklearn.py, in the project venv) can alternate
its own calls with these round by round, under the same load:

    {"op": "versions"}
    {"op": "ig_setup", "model": ".keras", "data": ".npy", "steps": 32}
    {"op": "ig", "batch_size": 4000, "save": ".npy or null"}   Alibi's IntegratedGradients.explain
    {"op": "permutation_setup", "model": ".keras", "X": ".npy", "y": ".npy", "n_repeats": 2}
    {"op": "permutation", "mode": "traced" | "keras_predict"}   scikit-learn's permutation_importance

Timed answers carry ``wall`` and ``cpu`` seconds. Only numpy, TensorFlow, Keras, Alibi and
scikit-learn are imported here (not audit/).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from _common import load_model, timed


class KerasClassifier:
    """The minimal scikit-learn-style estimator around a trained Keras classifier.

    ``predict_proba`` is either one traced call on all rows ("traced", the fastest way to call the
    model) or Keras' ``model.predict`` with its default batch of 32 ("keras_predict", the usual way).
    """

    def __init__(self, model: keras.Model, mode: str) -> None:
        self.model = model
        self.mode = mode
        spec = tf.TensorSpec((None, *tuple(model.inputs[0].shape)[1:]), tf.float32)
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def fit(self, X: np.ndarray, y: np.ndarray) -> KerasClassifier:
        return self  # already trained

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.mode == "traced":
            return np.asarray(self._call(tf.constant(X, tf.float32)).numpy(), dtype=np.float64)
        return np.asarray(self.model.predict(X, verbose=0), dtype=np.float64)


class Server:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def versions(self) -> dict[str, Any]:
        import alibi
        import sklearn

        return {
            "alibi": alibi.__version__,
            "scikit_learn": sklearn.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        }

    def ig_setup(self, model: str, data: str, steps: int) -> dict[str, Any]:
        from alibi.explainers import IntegratedGradients

        logging.getLogger("alibi").setLevel(logging.ERROR)  # the "scalar output, target None" notice
        self.state.update(model=load_model(Path(model)), X=np.load(data), steps=steps, explainers={})
        self.state["explainer_class"] = IntegratedGradients
        return {}

    def ig(self, batch_size: int, save: str | None = None) -> dict[str, Any]:
        explainers = self.state["explainers"]
        if batch_size not in explainers:
            explainers[batch_size] = self.state["explainer_class"](
                self.state["model"],
                method="gausslegendre",
                n_steps=self.state["steps"],
                internal_batch_size=batch_size,
            )
        found: list[Any] = []
        # Regression with one output: Alibi's documented call is target=None.
        wall, cpu = timed(lambda: found.append(explainers[batch_size].explain(self.state["X"], target=None)))
        if save is not None:
            attributions = found[-1].attributions
            np.save(save, np.asarray(attributions[0] if isinstance(attributions, list) else attributions))
        return {"wall": wall, "cpu": cpu}

    def permutation_setup(self, model: str, X: str, y: str, n_repeats: int) -> dict[str, Any]:
        loaded = load_model(Path(model))
        self.state.update(
            model=loaded,
            X=np.load(X),
            y=np.load(y),
            n_repeats=n_repeats,
            labels=list(range(int(loaded.outputs[0].shape[-1]))),
            estimators={mode: KerasClassifier(loaded, mode) for mode in ("traced", "keras_predict")},
        )
        return {}

    def permutation(self, mode: str) -> dict[str, Any]:
        from sklearn.inspection import permutation_importance
        from sklearn.metrics import log_loss

        labels = self.state["labels"]

        def neg_log_loss(estimator: KerasClassifier, X: np.ndarray, y: np.ndarray) -> float:
            return -float(log_loss(y, estimator.predict_proba(X), labels=labels))

        found: list[Any] = []

        def run() -> None:
            found.append(
                permutation_importance(
                    self.state["estimators"][mode],
                    self.state["X"],
                    self.state["y"],
                    scoring=neg_log_loss,
                    n_repeats=self.state["n_repeats"],
                    random_state=0,
                )
            )

        wall, cpu = timed(run)
        return {"wall": wall, "cpu": cpu, "importances_mean": found[-1].importances_mean.tolist()}


def main() -> None:
    answers = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints must not mix with the answers
    server = Server()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.pop("op")
        try:
            answer = getattr(server, op)(**request)
        except Exception as error:  # reported to the orchestrator, which records it
            answer = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
