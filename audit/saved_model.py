"""TF SavedModel folders as Keras models: the ``serving_default`` signature wrapped in a Keras layer.

A SavedModel (``model.export(dir)`` in Keras 3, ``model.save(dir)`` in tf.keras 2,
``tf.saved_model.save``) holds a TensorFlow graph, not Keras layers. It is loaded through a
`keras.layers.TFSMLayer` on its ``serving_default`` signature and wrapped in a one-input Keras
model, so the output-based methods (permutation, integrated gradients, saliency...) run on it as on
any model: gradients flow through the restored graph. The weight-based methods need Keras layers
and are skipped with their reason (the first layer is a `SavedModelLayer`).

The output activation is read from the graph (the op that makes the output, through identities and
function calls), so that softmax/sigmoid classifiers are recognised as with Keras models.

Loading runs the graph: only for trusted files (see `audit.model_safety`).
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from audit.model_safety import saved_model_message
from audit.types import AuditError

SIGNATURE = "serving_default"
_ACTIVATION_OPS = {"Softmax": "softmax", "Sigmoid": "sigmoid"}
_PASS_OPS = frozenset({"Identity", "IdentityN", "StatefulPartitionedCall", "PartitionedCall"})


class SavedModelLayer(keras.layers.TFSMLayer):  # type: ignore[misc]
    """The ``serving_default`` signature of a SavedModel as a single-input, single-output layer.

    Signatures take keyword arguments and return a dict; this layer takes the one input tensor and
    returns the one output. `activation` is the activation of the op that makes the output
    (softmax, sigmoid, or linear), for `audit.targets.output_activation`.
    """

    def __init__(self, folder: Path, *, name: str) -> None:
        super().__init__(str(folder), call_endpoint=SIGNATURE, name=name)
        function = self.call_endpoint_fn
        _, inputs = function.structured_input_signature
        outputs = function.structured_outputs
        if len(inputs) != 1 or not isinstance(outputs, dict) or len(outputs) != 1:
            raise AuditError(
                f"{folder}: the {SIGNATURE} signature has {len(inputs)} inputs and "
                f"{len(outputs) if isinstance(outputs, dict) else '?'} outputs; only single-input, "
                "single-output models are audited"
            )
        (self.input_key, self.input_spec_tf), (self.output_key,) = next(iter(inputs.items())), list(outputs)
        self.activation = getattr(keras.activations, _output_activation(function))

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.call_endpoint_fn(**{self.input_key: inputs})[self.output_key]


def load_saved_model(folder: Path, *, trust_model_code: bool = False) -> keras.Model:
    """The SavedModel in `folder` as a Keras model, or `AuditError` with the reason and the fix.

    Parameters
    ----------
    folder : Path
        A folder holding ``saved_model.pb`` (and ``variables/``).
    trust_model_code : bool
        Must be True: loading and calling a SavedModel runs the graph it holds.

    Returns
    -------
    keras.Model
        Input (n_samples, ...) as in the signature, output as the signature's single output.
    """
    if not trust_model_code:
        raise AuditError(saved_model_message(folder))
    try:
        layer = SavedModelLayer(folder, name=f"saved_model_{folder.name}".replace(".", "_"))
    except AuditError:
        raise
    except Exception as error:  # protobuf DecodeError, tf errors, ValueError for a missing signature
        text = " ".join(str(error).split())[:300] or type(error).__name__
        raise AuditError(
            f"{folder}: cannot load the SavedModel ({text}); check the folder is a complete export "
            f"with a {SIGNATURE} signature (model.export(dir))"
        ) from error
    spec = layer.input_spec_tf
    inputs = keras.Input(batch_shape=tuple(spec.shape), dtype=spec.dtype.name, name=layer.input_key)
    return keras.Model(inputs, layer(inputs), name=folder.name.replace(".", "_"))


def _output_activation(function: tf.types.experimental.ConcreteFunction) -> str:
    """softmax/sigmoid when that op makes the output (through identities and calls), else linear."""
    graph = function.graph.as_graph_def()
    library = {f.signature.name: f for f in graph.library.function}
    nodes = {node.name: node for node in graph.node}
    node_name, index = _split(function.outputs[0].name)
    for _ in range(100):  # bounded walk: a malformed graph cannot loop forever
        node = nodes.get(node_name)
        if node is None:
            return "linear"
        if node.op in _ACTIVATION_OPS:
            return _ACTIVATION_OPS[node.op]
        if node.op not in _PASS_OPS:
            return "linear"
        if node.op in ("Identity", "IdentityN"):
            node_name, index = _split(node.input[index if node.op == "IdentityN" else 0])
            continue
        called = library.get(node.attr["f"].func.name)
        if called is None or index >= len(called.signature.output_arg):
            return "linear"
        nodes = {inner.name: inner for inner in called.node_def}
        node_name, index = _split(called.ret[called.signature.output_arg[index].name])
    return "linear"


def _split(tensor: str) -> tuple[str, int]:
    """Node name and output index of a tensor name: ``node:0`` (graph) or ``node:output:0`` (function)."""
    parts = tensor.lstrip("^").split(":")
    index = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 0
    return parts[0], index
