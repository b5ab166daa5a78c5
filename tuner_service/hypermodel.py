"""Build and compile a Keras MLP from a task spec and one trial's hyperparameter values (worker side only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tuner_service.task import ARCHITECTURES, TaskSpec

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adamw", "nadam", "adagrad", "adamax")
TUNER_PREFIX = "tuner/"  # Keras Tuner's bookkeeping values (Hyperband's tuner/epochs, ...), not ours

DEFAULTS: Mapping[str, Any] = {
    "hidden_layers": 2,
    "neurons": 64,
    "activation": "relu",
    "learning_rate": 1e-3,
    "optimizer": "adam",
    "momentum": 0.0,
    "batch_size": 32,
    "dropout": 0.0,
    "l2": 0.0,
}


@dataclass(frozen=True)
class ModelValues:
    """One trial's model hyperparameters with defaults filled in; ``neurons`` holds one width per layer."""

    hidden_layers: int
    neurons: tuple[int, ...]
    activation: str
    learning_rate: float
    optimizer: str
    momentum: float
    batch_size: int
    dropout: float
    l2: float

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ModelValues:
        """Read the names this module understands; ``neurons_<i>`` overrides ``neurons`` for layer i."""
        merged = {**DEFAULTS, **{k: v for k, v in values.items() if not k.startswith(TUNER_PREFIX)}}
        layers = int(merged["hidden_layers"])
        if layers < 0:
            raise ValueError(f"hidden_layers must be >= 0, not {layers}")
        neurons = tuple(int(merged.get(f"neurons_{i}", merged["neurons"])) for i in range(layers))
        if any(n < 1 for n in neurons):
            raise ValueError(f"every layer needs at least one neuron; got {neurons}")
        dropout = float(merged["dropout"])
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        return cls(
            hidden_layers=layers,
            neurons=neurons,
            activation=str(merged["activation"]),
            learning_rate=float(merged["learning_rate"]),
            optimizer=str(merged["optimizer"]),
            momentum=float(merged["momentum"]),
            batch_size=batch_size(merged),
            dropout=dropout,
            l2=float(merged["l2"]),
        )


def batch_size(values: Mapping[str, Any]) -> int:
    """The trial's batch size (default 32); it is a fit argument, not part of the model."""
    size = int(values.get("batch_size", DEFAULTS["batch_size"]))
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, not {size}")
    return size


def normalization_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance of the training features, for ``keras.layers.Normalization``."""
    x64 = np.asarray(x, dtype=np.float64)
    variance = x64.var(axis=0)
    # A feature constant in the training split would be divided by ~1e-7 wherever it differs later (digits
    # has four such pixels), blowing the validation loss up to ~1e4: leave such features unscaled.
    variance[variance < 1e-12] = 1.0
    return x64.mean(axis=0).astype(np.float32), variance.astype(np.float32)


def target_stats(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output mean and standard deviation of the training target, for ``task.scale_target``."""
    y64 = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    std = y64.std(axis=0)
    std[std < 1e-12] = 1.0  # a constant target has nothing to scale
    return y64.mean(axis=0).astype(np.float32), std.astype(np.float32)


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0) -> keras.optimizers.Optimizer:
    """A Keras optimizer by its short name; only SGD takes ``momentum``."""
    key = name.lower()
    if key == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    classes = {
        "adam": keras.optimizers.Adam,
        "rmsprop": keras.optimizers.RMSprop,
        "adamw": keras.optimizers.AdamW,
        "nadam": keras.optimizers.Nadam,
        "adagrad": keras.optimizers.Adagrad,
        "adamax": keras.optimizers.Adamax,
    }
    if key not in classes:
        raise ValueError(f"unknown optimizer {name!r}; one of: {', '.join(OPTIMIZERS)}")
    return classes[key](learning_rate=learning_rate)


def build_model(
    task: TaskSpec,
    values: Mapping[str, Any],
    *,
    n_features: int,
    n_outputs: int,
    norm_stats: tuple[np.ndarray, np.ndarray] | None = None,
    target_stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """A compiled MLP for ``task``: input, normalization, hidden Dense layers, output.

    ``wide_deep`` also feeds the normalized input straight to the output layer, beside the last hidden
    layer. Multiclass targets are integer class ids whatever the loss. With ``task.scale_target`` the
    model ends in the target's units (see :func:`_scaled_output`) but learns as if on a standardized one.
    """
    if task.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {task.architecture!r}; one of: {', '.join(ARCHITECTURES)}")
    hp = ModelValues.from_mapping(values)
    inputs = keras.Input(shape=(n_features,), name="features")
    wide = _normalized(inputs, task, norm_stats)
    deep = _hidden_layers(wide, hp)
    if task.architecture == "wide_deep" and hp.hidden_layers > 0:
        deep = keras.layers.Concatenate(name="wide_deep")([wide, deep])
    metrics = [_metric(name, task, n_outputs) for name in task.metrics]
    if task.scale_target:
        if target_stats is None:
            raise ValueError("task.scale_target needs target_stats; pass target_stats(y_train)")
        outputs = _scaled_output(deep, task, n_outputs, target_stats)
        loss: str | keras.losses.Loss = StandardizedLoss(task.loss, *(s.tolist() for s in target_stats))
        metrics.append(keras.metrics.MeanMetricWrapper(LOSS_FUNCTIONS[task.loss], name=TARGET_UNITS_LOSS))
    else:
        outputs = keras.layers.Dense(n_outputs, activation=task.output_activation or "linear", name="output")(deep)
        loss = _loss(task, n_outputs)
    model = keras.Model(inputs, outputs, name=f"{task.type}_{task.architecture}")
    model.compile(optimizer=make_optimizer(hp.optimizer, hp.learning_rate, hp.momentum), loss=loss, metrics=metrics)
    return model


# With task.scale_target the loss Keras reports is in standardized units; this metric is the same loss in the
# target's own units, and training reports it as ``loss``/``val_loss`` (training.TargetUnitLogs).
TARGET_UNITS_LOSS = "loss_in_target_units"
LOSS_FUNCTIONS = {
    "mse": keras.losses.mean_squared_error,
    "mae": keras.losses.mean_absolute_error,
    "huber": keras.losses.huber,
}


def _scaled_output(deep: Any, task: TaskSpec, n_outputs: int, stats: tuple[np.ndarray, np.ndarray]) -> Any:
    """A linear unit-scale output, mapped to the target's units (z·std + mean), then the output activation.

    The saved model therefore predicts the target's own units, and an activation meant to bound them
    (relu for a non-negative target) bounds the prediction, not the standardized value.
    """
    mean, std = stats
    z = keras.layers.Dense(n_outputs, name="output")(deep)
    y = keras.layers.Rescaling(scale=std, offset=mean, name="target_units")(z)
    if task.output_activation:
        y = keras.layers.Activation(task.output_activation, name="output_activation")(y)
    return y


def _normalized(inputs: keras.KerasTensor, task: TaskSpec, stats: tuple[np.ndarray, np.ndarray] | None) -> Any:
    if not task.normalize:
        return inputs
    if stats is None:
        # An un-adapted Normalization layer would fail at fit time, far from the cause.
        raise ValueError("task.normalize needs norm_stats; pass normalization_stats(x_train)")
    mean, variance = stats
    return keras.layers.Normalization(mean=mean, variance=variance, name="normalization")(inputs)


def _hidden_layers(x: Any, hp: ModelValues) -> Any:
    regularizer = keras.regularizers.L2(hp.l2) if hp.l2 > 0 else None
    for i, width in enumerate(hp.neurons):
        x = keras.layers.Dense(width, activation=hp.activation, kernel_regularizer=regularizer, name=f"dense_{i}")(x)
        if hp.dropout > 0:
            x = keras.layers.Dropout(hp.dropout, name=f"dropout_{i}")(x)
    return x


def _loss(task: TaskSpec, n_outputs: int) -> str | keras.losses.Loss:
    if task.loss == "huber":
        return keras.losses.Huber()
    if task.loss == "categorical_crossentropy":
        return IdCategoricalCrossentropy(num_classes=n_outputs)
    return task.loss


def _metric(name: str, task: TaskSpec, n_outputs: int) -> keras.metrics.Metric:
    """A metric object named exactly ``name``, so History keys match ``task.metric_names()``."""
    if name in ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy"):
        # "accuracy" means the task's own accuracy; multiclass labels are ids, so all three are sparse there.
        if task.type == "multiclass":
            return keras.metrics.SparseCategoricalAccuracy(name=name)
        return keras.metrics.BinaryAccuracy(name=name)
    if name == "auc":
        # Multilabel AUC averages one curve per label instead of pooling labels together.
        multilabel = task.type == "multilabel"
        return keras.metrics.AUC(name=name, multi_label=multilabel, num_labels=n_outputs if multilabel else None)
    simple = {
        "binary_accuracy": keras.metrics.BinaryAccuracy,
        "precision": keras.metrics.Precision,
        "recall": keras.metrics.Recall,
        "mae": keras.metrics.MeanAbsoluteError,
        "mse": keras.metrics.MeanSquaredError,
        "rmse": keras.metrics.RootMeanSquaredError,
        "mape": keras.metrics.MeanAbsolutePercentageError,
    }
    if name not in simple:
        raise ValueError(f"unknown metric {name!r}")
    return simple[name](name=name)


@keras.saving.register_keras_serializable(package="tuner_service")
class StandardizedLoss(keras.losses.Loss):
    """A regression loss computed on the standardized target and prediction, ``(v - mean) / std``.

    The model predicts the target's units, yet its gradients (and so its usable learning rates) are those
    of a model trained on a unit-variance target: a target in the hundreds no longer rewards the learning
    rates that move fastest in the first epoch and then diverge.
    """

    def __init__(self, base: str, mean: list[float], std: list[float], name: str | None = None, **kwargs: Any):
        if base not in LOSS_FUNCTIONS:
            raise ValueError(f"unknown regression loss {base!r}; one of: {', '.join(LOSS_FUNCTIONS)}")
        super().__init__(name=name or f"standardized_{base}", **kwargs)
        self.base, self.mean, self.std = base, list(mean), list(std)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        mean = keras.ops.convert_to_tensor(self.mean, dtype=y_pred.dtype)
        std = keras.ops.convert_to_tensor(self.std, dtype=y_pred.dtype)
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        return LOSS_FUNCTIONS[self.base]((y_true - mean) / std, (y_pred - mean) / std)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "base": self.base, "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="tuner_service")
class IdCategoricalCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy fed integer class ids; it one-hot encodes them, as our labels are ids."""

    def __init__(self, num_classes: int, name: str = "categorical_crossentropy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ids = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        return keras.losses.categorical_crossentropy(keras.ops.one_hot(ids, self.num_classes), y_pred)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes}
