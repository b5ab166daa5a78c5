"""The built-in hypermodel: the service's declarative MLP (and wide & deep), as one hypermodel among others.

Unlike an installed hypermodel it is configured by the study's task (loss, metrics, normalization) and its
search space is whatever the study sends; MLP_DECLARED_SPACE is only what it offers when a study sends none.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from tuner_service.hypermodels.registry import MLP_DECLARED_SPACE
from tuner_service.hypermodels.runtime import Context, Runner


class MLPHyperModel(Runner):
    """Builds :func:`tuner_service.hypermodel.build_model` from the trial's values; images are flattened."""

    name = "mlp"
    declared_space = MLP_DECLARED_SPACE
    input_kinds = ("vectors", "images")

    def build(self, hp: Any, context: Context) -> Any:
        from tuner_service.hypermodel import build_model

        return build_model(
            context.task,
            hp.values,
            n_features=int(np.prod(context.input_shape)),
            n_outputs=context.num_outputs,
            norm_stats=context.norm_stats,
            target_stats=context.target_stats,
        )

    def fit(self, hp: Any, model: Any, x: Any, y: Any, *, context: Context, **kwargs: Any) -> Any:
        from tuner_service.hypermodel import batch_size

        x = x.reshape(len(x), -1)
        batch = batch_size(hp.values)
        validation = kwargs.pop("validation_data", None)
        if validation is not None:
            validation = validation_batches(validation[0], validation[1], batch)
        return model.fit(x, y, validation_data=validation, batch_size=batch, **kwargs)

    def inputs(self, x: np.ndarray, image_shape: tuple[int, ...] | None) -> np.ndarray:
        return x  # the MLP takes the flattened rows the split already holds


# The validation batches of the splits trained on lately, by (split arrays, batch size): on the TensorFlow
# backend Keras makes a tf.data pipeline of the arrays at every fit call (about 20 ms of CPU on 2 cores), which
# a promotion continuing its parent, one more fit call on the same split, would pay again.
_VALIDATION: OrderedDict[tuple[int, int, int], tuple[Any, Any, Any]] = OrderedDict()
VALIDATION_CACHE = 4


def validation_batches(x: np.ndarray, y: np.ndarray, batch: int) -> Any:
    """``validation_data`` for ``model.fit``: the rows flattened, in batches of ``batch`` in their order, as Keras
    batches the arrays itself (so the metrics are the same); on TensorFlow a dataset made once per split and
    batch size, on the other backends the arrays."""
    import keras

    flat = x.reshape(len(x), -1)
    if keras.backend.backend() != "tensorflow":
        return flat, y
    key = (id(x), id(y), batch)
    entry = _VALIDATION.get(key)
    if entry is None:
        import tensorflow as tf

        floatx = keras.backend.floatx()
        as_float = [a.astype(floatx) if np.issubdtype(a.dtype, np.floating) else a for a in (flat, y)]
        dataset = tf.data.Dataset.from_tensor_slices(tuple(as_float)).batch(batch)
        entry = _VALIDATION[key] = (x, y, dataset)  # the arrays are kept, so that their ids stay theirs
        while len(_VALIDATION) > VALIDATION_CACHE:
            _VALIDATION.popitem(last=False)
    _VALIDATION.move_to_end(key)
    return entry[2]
