"""Walking a Keras model's layer graph from its input: shared by the weight-reading methods.

`audit.methods.weight_sum` walks from the input to the first layer with weights;
`audit.methods.connection_weights` (Garson, Olden) walks the whole chain of Dense layers to the
output. Both step from a set of tensors to the layers that consume them (`consumers`) and walk
through layers that leave features unmixed. Their pass-through lists differ, on purpose:

- `PASS_THROUGH_DENSE_CHAIN` (Garson, Olden): layers that are the identity at inference (dropout
  of any kind, noise, activity regularisation), the input layer, and activations. Garson and
  Olden multiply the kernels of *every* Dense layer from input to output and, as in their papers,
  ignore biases and activations. A normalisation layer anywhere in that chain scales each unit by
  trained factors (gamma / sqrt(variance)) that the papers' formulas have no place for: walking
  through it would give figures that silently leave those factors out, so the methods are not
  applicable instead, naming the layer. Masking marks padded time steps, which an MLP has none of.
- `PASS_THROUGH_TO_FIRST_WEIGHTS` (weight sum): the same, plus Masking and per-feature
  normalisation (Normalization, BatchNormalization), common first layers of sequence models and
  MLPs. Weight sums read only the first weighted layer's kernel, and these act on each input
  feature separately, so they do not change which kernel row belongs to which feature; the figure
  stays the "sum of |W|" teams compute by hand, and the layers walked through are stored with it
  (``through``).
"""

from __future__ import annotations

import keras

#: Garson / Olden: walked through between Dense layers (see the module docstring for why it is
#: shorter than `PASS_THROUGH_TO_FIRST_WEIGHTS`).
PASS_THROUGH_DENSE_CHAIN: tuple[type[keras.layers.Layer], ...] = (
    keras.layers.InputLayer,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,  # a Dropout subclass: listed for the reader
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.Activation,
    keras.layers.ActivityRegularization,
)

#: Weight sum: walked through before the first weighted layer; adds the layers that act on each
#: feature separately, which do not change which kernel row belongs to which feature.
PASS_THROUGH_TO_FIRST_WEIGHTS: tuple[type[keras.layers.Layer], ...] = (
    *PASS_THROUGH_DENSE_CHAIN,
    keras.layers.Masking,
    keras.layers.Normalization,
    keras.layers.BatchNormalization,
)


def consumers(model: keras.Model, tensors: list[object]) -> list[tuple[keras.layers.Layer, list[object]]]:
    """Distinct layers of `model` called on any of `tensors`, each with the tensors it produced.

    A loaded Sequential model can hold two call nodes of one layer on the same input (its own
    build and its functional graph), so each layer is collected once with all its outputs.
    """
    found: dict[int, tuple[keras.layers.Layer, list[object]]] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            if any(inbound is tensor for inbound in node.input_tensors for tensor in tensors):
                found.setdefault(id(layer), (layer, []))[1].extend(node.output_tensors)
    return list(found.values())
