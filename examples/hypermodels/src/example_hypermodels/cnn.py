"""A small CNN for images (28x28 MNIST, 8x8 digits): convolution blocks, a dense head, a tuned batch size."""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt


class CNNHyperModel(kt.HyperModel):
    """Conv blocks (each halving the image while it is at least 4 pixels wide), then Dense and dropout.

    The service passes the data set's ``input_shape`` and ``num_classes``; run in-process, the defaults
    fit MNIST.
    """

    def __init__(self, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        inputs = keras.Input(shape=self.input_shape, name="image")
        x = inputs if len(self.input_shape) == 3 else keras.layers.Reshape((*self.input_shape, 1))(inputs)
        for i in range(hp.Int("conv_blocks", 1, 2, default=1)):
            x = keras.layers.Conv2D(
                hp.Int(f"filters_{i}", 8, 32, step=8, default=16), 3, padding="same", activation="relu"
            )(x)
            if x.shape[1] >= 4:
                x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(hp.Int("dense_units", 16, 64, step=16, default=32), activation="relu")(x)
        x = keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.25, default=0.0))(x)
        outputs = keras.layers.Dense(self.num_classes, activation="softmax")(x)
        model = keras.Model(inputs, outputs, name="cnn")
        model.compile(
            optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=3e-3)),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        # Tuned here rather than in build: the batch size belongs to training, not to the model.
        kwargs["batch_size"] = hp.Choice("batch_size", [32, 64], default=32)
        return model.fit(*args, **kwargs)
