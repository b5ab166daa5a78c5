"""A wide & deep model for feature vectors, written as a plain ``build_model(hp)`` function.

The wide part feeds the inputs straight to the output; the deep part is a stack of Dense layers.
"""

from __future__ import annotations

import keras
import keras_tuner as kt


def build_model(hp: kt.HyperParameters, input_shape: tuple[int, ...] = (64,), num_classes: int = 10) -> keras.Model:
    """The service passes ``input_shape`` (vectors only) and ``num_classes``; in-process the defaults fit digits."""
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    deep = inputs
    for i in range(hp.Int("deep_layers", 1, 3, default=2)):
        deep = keras.layers.Dense(hp.Int(f"units_{i}", 16, 128, step=16, default=64), activation="relu")(deep)
    merged = keras.layers.Concatenate()([inputs, deep])
    outputs = keras.layers.Dense(num_classes, activation="softmax")(merged)
    model = keras.Model(inputs, outputs, name="wide_deep")
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
