"""Tests for tuner_service.hypermodel: model structure, compile settings and a one-epoch fit per task."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from tuner_service.datasets import describe_builtin, load_split, output_units
from tuner_service.hypermodel import (
    ModelValues,
    batch_size,
    build_model,
    make_optimizer,
    normalization_stats,
)
from tuner_service.task import TaskSpec

# Task type -> (built-in set, every metric the type allows, the loss to exercise beyond the default).
CASES = {
    "regression": ("diabetes", ("mae", "mse", "rmse", "mape"), "huber"),
    "binary": ("breast_cancer", ("accuracy", "binary_accuracy", "auc", "precision", "recall"), "binary_crossentropy"),
    "multilabel": ("synthetic_multilabel", ("binary_accuracy", "auc", "precision", "recall"), "binary_crossentropy"),
    "multiclass": (
        "digits",
        ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy"),
        "categorical_crossentropy",
    ),
}
SMALL = {"hidden_layers": 1, "neurons": 8}


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(0)


def small_model(task: TaskSpec, values: dict | None = None, n_features: int = 4, n_outputs: int = 1) -> keras.Model:
    x = np.random.default_rng(0).normal(size=(16, n_features)).astype(np.float32)
    return build_model(
        task,
        SMALL if values is None else values,
        n_features=n_features,
        n_outputs=n_outputs,
        norm_stats=normalization_stats(x),
        target_stats=(np.zeros(n_outputs, np.float32), np.ones(n_outputs, np.float32)) if task.scale_target else None,
    )


@pytest.mark.parametrize("architecture", ["sequential", "wide_deep"])
@pytest.mark.parametrize("task_type", list(CASES))
def test_fit_one_epoch_history_matches_metric_names(task_type: str, architecture: str, tmp_path: Path) -> None:
    name, metrics, loss = CASES[task_type]
    task = TaskSpec(task_type, architecture=architecture, loss=loss, metrics=metrics, scale_target=False)
    info = describe_builtin(name)
    split = load_split(info, tmp_path, task_type=task_type)
    n_outputs = output_units(info, task_type)
    values = {**SMALL, "dropout": 0.1, "l2": 1e-4, "tuner/epochs": 2, "tuner/trial_id": "0001"}
    model = build_model(
        task, values, n_features=info.n_features, n_outputs=n_outputs, norm_stats=normalization_stats(split.x_train)
    )
    assert model.output_shape == (None, n_outputs)
    assert model.get_layer("output").activation.__name__ == (task.output_activation or "linear")
    history = model.fit(
        split.x_train[:64],
        split.y_train[:64],
        validation_data=(split.x_val[:32], split.y_val[:32]),
        epochs=1,
        batch_size=32,
        verbose=0,
    )
    assert sorted(history.history) == sorted(task.metric_names())
    assert all(np.isfinite(v[0]) for v in history.history.values())


@pytest.mark.parametrize(
    ("task_type", "loss", "expected"),
    [
        ("regression", "", "mse"),
        ("regression", "mae", "mae"),
        ("binary", "binary_focal_crossentropy", "binary_focal_crossentropy"),
        ("multilabel", "", "binary_crossentropy"),
        ("multiclass", "", "sparse_categorical_crossentropy"),
    ],
)
def test_loss_names(task_type: str, loss: str, expected: str) -> None:
    assert small_model(TaskSpec(task_type, loss=loss, scale_target=False)).loss == expected


def test_huber_loss_object() -> None:
    assert isinstance(small_model(TaskSpec("regression", loss="huber", scale_target=False)).loss, keras.losses.Huber)


def test_categorical_crossentropy_takes_class_ids() -> None:
    model = small_model(TaskSpec("multiclass", loss="categorical_crossentropy"), n_outputs=3)
    y_pred = keras.ops.convert_to_tensor(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32))
    ids = np.array([0, 2], dtype=np.int32)
    dense = keras.losses.SparseCategoricalCrossentropy()(ids, y_pred)
    assert float(model.loss(ids, y_pred)) == pytest.approx(float(dense), rel=1e-5)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_saved_model_reloads_with_custom_loss(tmp_path: Path) -> None:
    model = small_model(TaskSpec("multiclass", loss="categorical_crossentropy"), n_outputs=3)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    x = np.ones((2, 4), dtype=np.float32)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize(
    ("activation", "low", "high"),
    [("softplus", 0.0, np.inf), ("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0), ("relu", 0.0, np.inf)],
)
@pytest.mark.parametrize("scale_target", [False, True])
def test_regression_output_activation_is_applied(activation: str, low: float, high: float, scale_target: bool) -> None:
    task = TaskSpec("regression", output_activation=activation, scale_target=scale_target)
    model = small_model(task, {"hidden_layers": 0})
    # A scaled target's activation bounds the prediction in the target's units, after the rescaling.
    layer = model.get_layer("output_activation" if scale_target else "output")
    assert layer.activation.__name__ == activation
    x = np.random.default_rng(1).normal(scale=50.0, size=(64, 4)).astype(np.float32)
    predictions = model.predict(x, verbose=0)
    assert predictions.min() >= low and predictions.max() <= high


def test_per_layer_neurons_fall_back_to_neurons() -> None:
    model = small_model(TaskSpec("regression"), {"hidden_layers": 3, "neurons": 5, "neurons_0": 7, "neurons_2": 3})
    assert [model.get_layer(f"dense_{i}").units for i in range(3)] == [7, 5, 3]


def test_defaults() -> None:
    values = ModelValues.from_mapping({})
    assert values.neurons == (64, 64) and values.activation == "relu" and values.optimizer == "adam"
    assert batch_size({}) == 32 and batch_size({"batch_size": 128}) == 128
    model = small_model(TaskSpec("binary"), {})
    assert [model.get_layer(f"dense_{i}").units for i in range(2)] == [64, 64]
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-3)


def test_dropout_l2_and_activation() -> None:
    model = small_model(
        TaskSpec("binary"), {"hidden_layers": 2, "neurons": 4, "dropout": 0.3, "l2": 0.01, "activation": "tanh"}
    )
    assert [model.get_layer(f"dropout_{i}").rate for i in range(2)] == [0.3, 0.3]
    dense = model.get_layer("dense_1")
    assert dense.activation.__name__ == "tanh"
    assert dense.kernel_regularizer.get_config()["l2"] == pytest.approx(0.01)
    plain = small_model(TaskSpec("binary"), {"hidden_layers": 1})
    assert plain.get_layer("dense_0").kernel_regularizer is None
    assert not [layer for layer in plain.layers if isinstance(layer, keras.layers.Dropout)]


@pytest.mark.parametrize("architecture", ["sequential", "wide_deep"])
def test_zero_hidden_layers(architecture: str) -> None:
    model = small_model(TaskSpec("multiclass", architecture=architecture), {"hidden_layers": 0}, n_outputs=3)
    kinds = (keras.layers.Dense, keras.layers.Concatenate)
    assert [layer.name for layer in model.layers if isinstance(layer, kinds)] == ["output"]
    assert model.get_layer("output").input.shape == (None, 4)
    probabilities = model.predict(np.ones((2, 4), dtype=np.float32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_wide_deep_concatenates_normalized_input_and_last_hidden_layer() -> None:
    model = small_model(TaskSpec("regression", architecture="wide_deep"), {"hidden_layers": 2, "neurons": 6})
    assert model.get_layer("wide_deep").output.shape == (None, 4 + 6)
    assert model.get_layer("output").input.shape == (None, 10)
    sequential = small_model(TaskSpec("regression"), {"hidden_layers": 2, "neurons": 6})
    assert sequential.get_layer("output").input.shape == (None, 6)


def test_normalization_uses_the_given_statistics() -> None:
    x = np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32)
    mean, variance = normalization_stats(x)
    np.testing.assert_allclose(mean, [2.0, 20.0])
    np.testing.assert_allclose(variance, [1.0, 100.0])
    task = TaskSpec("regression", scale_target=False)
    model = build_model(task, {"hidden_layers": 0}, n_features=2, n_outputs=1, norm_stats=(mean, variance))
    normalize = keras.Model(model.input, model.get_layer("normalization").output)
    np.testing.assert_allclose(normalize.predict(x, verbose=0), [[-1.0, -1.0], [1.0, 1.0]], atol=1e-5)


def test_normalization_can_be_off_but_needs_stats_when_on() -> None:
    model = build_model(TaskSpec("regression", normalize=False, scale_target=False), SMALL, n_features=3, n_outputs=1)
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
    with pytest.raises(ValueError, match="norm_stats"):
        build_model(TaskSpec("regression"), SMALL, n_features=3, n_outputs=1)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", keras.optimizers.SGD),
        ("adam", keras.optimizers.Adam),
        ("rmsprop", keras.optimizers.RMSprop),
        ("adamw", keras.optimizers.AdamW),
        ("nadam", keras.optimizers.Nadam),
        ("adagrad", keras.optimizers.Adagrad),
        ("adamax", keras.optimizers.Adamax),
        ("Adam", keras.optimizers.Adam),
    ],
)
def test_optimizers_by_name(name: str, cls: type) -> None:
    optimizer = make_optimizer(name, 0.01, momentum=0.9)
    assert type(optimizer) is cls
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.01)


def test_sgd_momentum_reaches_the_compiled_model() -> None:
    assert make_optimizer("sgd", 0.1, 0.9).momentum == pytest.approx(0.9)
    model = small_model(TaskSpec("regression"), {**SMALL, "optimizer": "sgd", "momentum": 0.5, "learning_rate": 0.05})
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == pytest.approx(0.5)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.05)


@pytest.mark.parametrize(
    "values",
    [{"optimizer": "lbfgs"}, {"hidden_layers": -1}, {"neurons": 0}, {"dropout": 1.0}, {"batch_size": 0}],
)
def test_bad_values_raise(values: dict) -> None:
    with pytest.raises(ValueError):
        small_model(TaskSpec("regression"), {**SMALL, **values})


def test_a_feature_constant_in_training_is_not_blown_up_later() -> None:
    import numpy as np

    from tuner_service.hypermodel import normalization_stats

    x = np.array([[0.0, 1.0], [0.0, 3.0], [0.0, 5.0]], dtype=np.float32)
    mean, variance = normalization_stats(x)
    assert variance[0] == 1.0 and variance[1] > 0
    assert abs((1.0 - mean[0]) / np.sqrt(variance[0])) == 1.0  # a later 1 stays 1, not 1e7


@pytest.mark.parametrize("task_type", list(CASES))
def test_validation_batches_give_the_metrics_of_keras_own_batching(task_type: str, tmp_path: Path) -> None:
    """The MLP's cached validation dataset (made once per split and batch size) measures what Keras measures
    when it batches the arrays itself at each fit call; the same split and batch size reuse it."""
    from tuner_service.hypermodels.mlp import validation_batches

    name, metrics, _ = CASES[task_type]
    task = TaskSpec(task_type, metrics=metrics, scale_target=False)
    info = describe_builtin(name)
    split = load_split(info, tmp_path, task_type=task_type)
    x_val, y_val = split.x_val[:40], split.y_val[:40]  # 40 rows in batches of 16: the last batch is partial
    histories = []
    for validation in ((x_val, y_val), validation_batches(x_val, y_val, 16)):
        keras.utils.set_random_seed(0)
        model = build_model(
            task, SMALL, n_features=info.n_features, n_outputs=output_units(info, task_type),
            norm_stats=normalization_stats(split.x_train),
        )  # fmt: skip
        history = model.fit(
            split.x_train[:64], split.y_train[:64], validation_data=validation, epochs=2, batch_size=16, verbose=0
        )
        histories.append({k: v for k, v in history.history.items() if k.startswith("val_")})
    assert histories[0] and sorted(histories[0]) == sorted(histories[1])
    for key, values in histories[0].items():
        assert histories[1][key] == pytest.approx(values, rel=1e-6, abs=1e-7), key
    assert validation_batches(x_val, y_val, 16) is validation_batches(x_val, y_val, 16)
    assert validation_batches(x_val, y_val, 8) is not validation_batches(x_val, y_val, 16)
