"""A promoted trial continues its parent's training (weights, optimizer state, epoch counter), from this
process's memory or from the parent's checkpoint, and so does a trial handed back by a stopping worker; a
scaled regression target is reported and saved in its own units. Real Keras models on digits and diabetes, a
few epochs each."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from tuner_service.config import load_settings
from tuner_service.datasets import describe_builtin, load_split, output_units
from tuner_service.hypermodel import StandardizedLoss, build_model, normalization_stats, target_stats
from tuner_service.task import TaskSpec
from tuner_service.training import (
    LastState,
    LiveModels,
    TargetUnitLogs,
    _atomic_save,
    _save_preempted,
    legacy_preempt_checkpoint_path,
    load_checkpoint,
    preempt_checkpoint_path,
    preempted_checkpoint,
)

VALUES = {"hidden_layers": 1, "neurons": 32, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 64}


def digits(tmp_path: Path) -> tuple:
    info = describe_builtin("digits")
    split = load_split(info, tmp_path, task_type="multiclass")
    task = TaskSpec("multiclass")
    model = build_model(
        task, VALUES, n_features=info.n_features, n_outputs=output_units(info, "multiclass"),
        norm_stats=normalization_stats(split.x_train),
    )  # fmt: skip
    return split, model


def fit_epoch(model: keras.Model, split, epoch: int) -> float:
    """Train epoch ``epoch`` (0-based) with a fixed shuffle; return its training loss."""
    keras.utils.set_random_seed(7)
    history = model.fit(split.x_train, split.y_train, epochs=epoch + 1, initial_epoch=epoch, batch_size=64, verbose=0)
    return history.history["loss"][0]


def test_a_checkpoint_restores_the_optimizer_state_and_continues_like_the_model_in_memory(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    split, model = digits(tmp_path)
    model.fit(split.x_train, split.y_train, epochs=2, batch_size=64, verbose=0)
    _atomic_save(model, tmp_path / "parent.keras")
    loaded = load_checkpoint(None, VALUES, tmp_path / "parent.keras")  # type: ignore[arg-type]
    steps = int(np.ceil(len(split.x_train) / 64))
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2 * steps
    for mine, theirs in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
    # Weights alone (the old checkpoint) restart Adam: its moments are zero and its step count 1, so the
    # third epoch differs from the one the model in memory trains; the full checkpoint trains the same one.
    weights_only = keras.models.clone_model(model)
    weights_only.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.loss)
    weights_only.set_weights(model.get_weights())
    in_memory, from_checkpoint, restarted = (fit_epoch(m, split, 2) for m in (model, loaded, weights_only))
    assert from_checkpoint == pytest.approx(in_memory, rel=1e-4)
    assert abs(restarted - in_memory) > 1e-3 * in_memory


def test_last_state_keeps_the_last_epoch_while_early_stopping_restores_the_best(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    split, model = digits(tmp_path)
    last = LastState()
    # "Best" = highest training loss: the first epoch is best, all three train, and the first is restored.
    stopper = keras.callbacks.EarlyStopping(monitor="loss", mode="max", patience=10, restore_best_weights=True)
    seen: dict[int, list] = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = self.model.get_weights()

    model.fit(split.x_train, split.y_train, epochs=3, batch_size=64, verbose=0, callbacks=[Snapshot(), last, stopper])
    for restored, first, kept, third in zip(model.get_weights(), seen[0], last.weights, seen[2], strict=True):
        np.testing.assert_array_equal(restored, first)
        np.testing.assert_array_equal(kept, third)
    assert not all(np.array_equal(a, b) for a, b in zip(seen[0], last.weights, strict=True))


def test_a_handed_back_trial_resumes_from_its_last_epoch_with_the_optimizer_state(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    split, model = digits(tmp_path)
    settings = load_settings({"TUNER_HOME": str(tmp_path / "home")})
    legacy = legacy_preempt_checkpoint_path(settings, 1, 7)
    legacy.parent.mkdir(parents=True)
    model.save_weights(legacy)  # handed back by an older release: still resumed from (weights only)
    assert preempted_checkpoint(settings, 1, 7) == legacy
    last = LastState()
    # The worker stops after epoch 2 while early stopping (best: the first epoch, by highest loss) has already
    # restored epoch 1's weights: the checkpoint keeps epoch 2's, and the optimizer's state after 2 epochs.
    stopper = keras.callbacks.EarlyStopping(monitor="loss", mode="max", patience=10, restore_best_weights=True)
    model.fit(split.x_train, split.y_train, epochs=2, batch_size=64, verbose=0, callbacks=[last, stopper])
    _save_preempted(model, last, settings, 1, 7)
    path = preempted_checkpoint(settings, 1, 7)
    assert path == preempt_checkpoint_path(settings, 1, 7) and path.suffix == ".keras" and not legacy.exists()
    resumed = load_checkpoint(None, VALUES, path)  # type: ignore[arg-type]
    steps = int(np.ceil(len(split.x_train) / 64))
    assert int(resumed.optimizer.iterations) == int(model.optimizer.iterations) == 2 * steps
    for kept, third in zip(resumed.get_weights(), last.weights, strict=True):
        np.testing.assert_array_equal(kept, third)
    in_memory, from_checkpoint = (fit_epoch(m, split, 2) for m in (model, resumed))
    assert from_checkpoint == pytest.approx(in_memory, rel=1e-4), "the third epoch trains as if never stopped"


def test_live_models_hand_a_model_out_once_and_only_while_its_checkpoint_is_unchanged(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    ckpt = tmp_path / "a.keras"
    model.save(ckpt)
    live = LiveModels(max_parameters=1_000, max_models=4)
    live.put((1, "a"), model, ckpt)
    assert live.take((1, "b"), ckpt) is None
    assert live.take((1, "a"), ckpt) is model
    assert live.take((1, "a"), ckpt) is None, "taken once: a failed child cannot leave a half-trained model"
    live.put((1, "a"), model, ckpt)
    other = tmp_path / "elsewhere.keras"
    model.save(other)
    other.replace(ckpt)  # the parent was retrained by another worker
    assert live.take((1, "a"), ckpt) is None
    for i in range(5):
        live.put((1, str(i)), model, ckpt)
    assert len(live) == 4
    big = keras.Sequential([keras.Input((100,)), keras.layers.Dense(20)])  # 2,020 parameters
    live.put((2, "big"), big, ckpt)
    assert len(live) == 0, "over the parameter budget nothing is kept"


def test_a_scaled_target_learns_standardized_but_reports_and_predicts_in_its_own_units(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    info = describe_builtin("diabetes")
    split = load_split(info, tmp_path, task_type="regression")
    task = TaskSpec.from_json({"type": "regression", "metrics": ["mae", "mse"]})
    assert task.scale_target
    mean, std = target_stats(split.y_train)
    assert 120 < mean[0] < 180 and 60 < std[0] < 90  # diabetes: a target in the hundreds
    model = build_model(
        task, {"hidden_layers": 1, "neurons": 32, "learning_rate": 0.01}, n_features=info.n_features, n_outputs=1,
        norm_stats=normalization_stats(split.x_train), target_stats=(mean, std),
    )  # fmt: skip
    # The loss it minimises is the standardized one: the target's MSE divided by its variance.
    y, p = split.y_val[:8], split.y_val[:8] + 10.0
    assert float(model.loss(y, p)) == pytest.approx(100.0 / std[0] ** 2, rel=1e-4)
    history = model.fit(
        split.x_train, split.y_train, validation_data=(split.x_val, split.y_val), epochs=3, batch_size=32,
        verbose=0, callbacks=[TargetUnitLogs()],
    ).history  # fmt: skip
    assert sorted(history) == sorted(task.metric_names())
    path = tmp_path / "m.keras"
    model.save(path)
    predictions = keras.models.load_model(path).predict(split.x_val, verbose=0)
    # The downloaded model predicts the target's units, and the reported numbers are measured in them.
    assert 0.5 * mean[0] < predictions.mean() < 1.5 * mean[0]
    errors = predictions - split.y_val
    assert history["val_mae"][-1] == pytest.approx(float(np.abs(errors).mean()), rel=1e-3)
    assert history["val_loss"][-1] == pytest.approx(float((errors**2).mean()), rel=1e-3)
    assert history["val_mse"][-1] == pytest.approx(history["val_loss"][-1], rel=1e-4)
    assert history["val_mae"][-1] < 0.9 * float(np.abs(split.y_val - mean).mean()), "it learned something"


def test_standardized_loss_round_trips_through_its_config() -> None:
    loss = StandardizedLoss("huber", [150.0], [75.0])
    again = StandardizedLoss.from_config(loss.get_config())
    y, p = np.array([[100.0], [200.0]], np.float32), np.array([[130.0], [150.0]], np.float32)
    assert float(again(y, p)) == pytest.approx(float(loss(y, p)))
    with pytest.raises(ValueError, match="unknown regression loss"):
        StandardizedLoss("hinge", [0.0], [1.0])
