"""Connection-weight importances of an MLP: Olden's signed weight products and Garson's shares.

Both read the weights only (no eval sample) and apply to a plain MLP: a single-input,
single-output model that is a chain of Dense layers, with pass-through layers (dropout, noise,
activations) allowed between them. Anything else (a recurrent, convolutional or normalisation
layer, a branch, a merge) makes the method not applicable, with the offending layer named.
Biases and activations are ignored, as in the original papers. The pass-through layers are listed
in `audit.keras_graph`, which says why weight sums walk through more of them.

Olden, Joy & Death (2004), "An accurate comparison of methods for quantifying variable importance
in artificial neural networks using simulated data", Ecological Modelling 178, 389-397.
Garson (1991), "Interpreting neural-network connection weights", AI Expert 6(4), 46-51, in the
form given by Goh (1995), "Back-propagation neural networks for modeling complex systems",
Artificial Intelligence in Engineering 9(3), 143-151.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from audit.keras_graph import PASS_THROUGH_DENSE_CHAIN, consumers
from audit.methods.base import MethodContext, MethodNotApplicable, register_method
from audit.options import NoOptions
from audit.types import FloatArray, Importance


@dataclass(frozen=True)
class DenseChain:
    """The Dense layers of an MLP from input to output, with their kernels (n_in, n_out) as float64."""

    layers: tuple[str, ...]
    kernels: tuple[FloatArray, ...]
    #: Pass-through layers walked over, in order.
    through: tuple[str, ...]

    @property
    def hidden_units(self) -> list[int]:
        return [int(kernel.shape[1]) for kernel in self.kernels[:-1]]

    @property
    def n_outputs(self) -> int:
        return int(self.kernels[-1].shape[1])


def compute_olden(model: keras.Model, *, feature_names: tuple[str, ...]) -> Importance:
    """Olden's connection-weight importance: the signed sum over all input-to-output paths.

    For kernels W1 (n_features, h1), ..., Wk (h_{k-1}, n_outputs) the importance of feature i is
    ``(W1 @ W2 @ ... @ Wk)[i, :].sum()``: the product of the weights along every path from input i
    to an output, summed over paths and outputs. With one hidden layer this is Olden's
    ``sum_j w_ij v_jk``. Values are signed (a positive value pushes the outputs up); features are
    ranked by magnitude.

    Parameters
    ----------
    model : keras.Model
        An MLP whose input has shape (n_samples, n_features): Dense layers in a chain.
    feature_names : tuple of str
        One name per input feature.

    Returns
    -------
    Importance
        ``values`` (n_features,), signed.

    Raises
    ------
    MethodNotApplicable
        When the model is not a chain of Dense layers, or its input width does not match the names.

    References
    ----------
    Olden, Joy & Death (2004), Ecological Modelling 178, 389-397.
    """
    chain = dense_chain(model, "olden", len(feature_names))
    product = chain.kernels[0]
    for kernel in chain.kernels[1:]:
        product = product @ kernel
    return Importance(
        method="olden",
        feature_names=feature_names,
        values=np.asarray(product.sum(axis=1), dtype=np.float64),
        parameters=_parameters(chain),
        signed=True,
    )


def compute_garson(model: keras.Model, *, feature_names: tuple[str, ...]) -> Importance:
    """Garson's relative importance: each feature's share of the absolute connection weights.

    One hidden layer (Garson 1991, Goh 1995), input weights w_ij and output weights v_jk::

        Q_ijk = |w_ij| |v_jk| / sum_i' |w_i'j|
        importance_i = sum_jk Q_ijk / sum_i'jk Q_i'jk

    i.e. each hidden unit j is split among the inputs by their share of its incoming |w|, and
    weighted by how strongly it feeds the outputs.

    Deeper stacks use the recursive generalisation of that idea: every hidden unit, in every hidden
    layer, is split among its own inputs by their share of its incoming |W| (each column of
    |W_l| normalised to sum 1, l = 1..k-1), so a unit's composition in terms of the input features
    is ``A_1 @ ... @ A_l`` (columns summing to 1). The output layer's |W_k| is not normalised, as
    |v_jk| in the one-hidden-layer formula::

        importance = normalise((A_1 @ A_2 @ ... @ A_{k-1} @ |W_k|).sum(axis=1))

    With one hidden layer this is exactly the formula above; with no hidden layer (a linear model)
    it is the share of each feature in sum |W|. A hidden unit whose incoming weights are all zero
    carries nothing and gets a zero column. Values are >= 0 and sum to 1 (all zeros if every
    weight is zero).

    Parameters
    ----------
    model : keras.Model
        An MLP whose input has shape (n_samples, n_features): Dense layers in a chain.
    feature_names : tuple of str
        One name per input feature.

    Returns
    -------
    Importance
        ``values`` (n_features,): shares summing to 1.

    Raises
    ------
    MethodNotApplicable
        When the model is not a chain of Dense layers, or its input width does not match the names.

    References
    ----------
    Garson (1991), AI Expert 6(4), 46-51; Goh (1995), Artificial Intelligence in Engineering 9(3),
    143-151; compared in Olden, Joy & Death (2004), Ecological Modelling 178, 389-397.
    """
    chain = dense_chain(model, "garson", len(feature_names))
    composition = np.eye(len(feature_names))
    for kernel in chain.kernels[:-1]:
        composition = composition @ _column_shares(np.abs(kernel))
    per_feature = (composition @ np.abs(chain.kernels[-1])).sum(axis=1)
    total = per_feature.sum()
    values = per_feature / total if total > 0 else np.zeros_like(per_feature)
    return Importance(
        method="garson",
        feature_names=feature_names,
        values=np.asarray(values, dtype=np.float64),
        parameters=_parameters(chain),
    )


def dense_chain(model: keras.Model, method: str, n_features: int) -> DenseChain:
    """The Dense layers of `model` from input to output, or `MethodNotApplicable` saying why not.

    The graph is walked from the input tensor: each step must reach exactly one layer, which must
    be a Dense or a pass-through layer, and the walk must end at the model's only output.
    """
    needs = f"{method} needs a chain of Dense layers (an MLP)"
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise MethodNotApplicable(
            f"{needs}; the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )
    tensors: list[object] = [model.inputs[0]]
    source = "the input"
    names: list[str] = []
    kernels: list[FloatArray] = []
    through: list[str] = []
    while True:
        found = consumers(model, tensors)
        if not found:
            break
        if len(found) > 1:
            listed = ", ".join(f"'{layer.name}'" for layer, _ in found)
            raise MethodNotApplicable(f"{needs}; {source} feeds {len(found)} layers ({listed})")
        layer, tensors = found[0]
        source = f"'{layer.name}'"
        if isinstance(layer, keras.layers.Dense):
            names.append(layer.name)
            kernels.append(np.asarray(layer.kernel, dtype=np.float64))
        elif isinstance(layer, PASS_THROUGH_DENSE_CHAIN):
            through.append(layer.name)
        else:
            raise MethodNotApplicable(f"{needs}; found {type(layer).__name__} '{layer.name}'")
    if not any(tensor is model.outputs[0] for tensor in tensors):
        raise MethodNotApplicable(f"{needs}; the chain from the input does not end at the model output")
    if not kernels:
        raise MethodNotApplicable(f"{needs}; the model has no Dense layer")
    if kernels[0].shape[0] != n_features:
        raise MethodNotApplicable(
            f"first Dense layer '{names[0]}' has {kernels[0].shape[0]} inputs, the sample names {n_features}"
        )
    return DenseChain(tuple(names), tuple(kernels), tuple(through))


def _column_shares(abs_kernel: FloatArray) -> FloatArray:
    """|W| with each column (one unit's incoming weights) divided by its sum; all-zero columns stay 0."""
    sums = abs_kernel.sum(axis=0, keepdims=True)
    shares: FloatArray = np.divide(abs_kernel, sums, out=np.zeros_like(abs_kernel), where=sums > 0)
    return shares


def _parameters(chain: DenseChain) -> dict[str, str | list[str] | list[int] | int]:
    return {
        "target": "sum over all outputs",
        "layers": list(chain.layers),
        "hidden_units": chain.hidden_units,
        "n_outputs": chain.n_outputs,
        "through": list(chain.through),
    }


@register_method(
    "garson",
    needs_eval_sample=False,
    description="Garson's share of absolute connection weights per input (MLPs only)",
    options=NoOptions,
)
def _garson(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext[NoOptions]
) -> Importance:
    return compute_garson(model, feature_names=context.feature_names)


@register_method(
    "olden",
    needs_eval_sample=False,
    description="Olden's signed product of connection weights per input (MLPs only)",
    options=NoOptions,
)
def _olden(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext[NoOptions]
) -> Importance:
    return compute_olden(model, feature_names=context.feature_names)
