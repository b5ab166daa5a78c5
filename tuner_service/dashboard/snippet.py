"""The best trial as ready-to-paste ``keras_tuner`` code: for the built-in MLP a ``build_model(hp)`` with
every best value pinned by ``hp.Fixed``, building the same MLP the workers train; for an installed
hypermodel the few lines that build it from its package with the best values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuner_service.dashboard.columns import TUNER_PREFIX

# What tuner_service.hypermodel reads; any other name is pinned too, but the builder does not use it.
MODEL_NAMES = ("hidden_layers", "neurons", "activation", "dropout", "l2", "optimizer", "learning_rate", "momentum")
DEFAULTS: Mapping[str, Any] = {
    "hidden_layers": 2, "neurons": 64, "activation": "relu", "learning_rate": 1e-3, "optimizer": "adam",
    "momentum": 0.0, "batch_size": 32, "dropout": 0.0, "l2": 0.0,
}  # fmt: skip
OUTPUT_ACTIVATIONS = {"binary": "sigmoid", "multilabel": "sigmoid", "multiclass": "softmax"}
# The service trains multiclass models on integer class ids whatever the configured loss.
LOSSES = {"multiclass": "sparse_categorical_crossentropy"}
KERAS_METRICS = {
    "accuracy": "accuracy", "binary_accuracy": "binary_accuracy", "sparse_categorical_accuracy": "accuracy",
    "categorical_accuracy": "accuracy", "auc": "auc", "precision": "precision", "recall": "recall",
    "mae": "mae", "mse": "mse", "rmse": "root_mean_squared_error", "mape": "mape",
}  # fmt: skip


def keras_tuner_snippet(
    values: Mapping[str, Any],
    task: Mapping[str, Any],
    *,
    n_features: int,
    n_outputs: int,
    title: str,
) -> str:
    """Python source of ``build_model(hp)`` for these hyperparameter values and task."""
    values = {k: v for k, v in values.items() if not k.startswith(TUNER_PREFIX)}
    per_layer = sorted((k for k in values if k.startswith("neurons_") and k[8:].isdigit()), key=lambda k: int(k[8:]))
    task_type = task.get("type", "multiclass")
    activation = task.get("output_activation") or OUTPUT_ACTIVATIONS.get(task_type)
    loss = LOSSES.get(task_type, task.get("loss") or "mse")
    metrics = [KERAS_METRICS[m] for m in task.get("metrics", []) if m in KERAS_METRICS]
    lines = [
        "import keras",
        "import keras_tuner",
        "",
        "",
        f"# {' '.join(title.split())}",  # one line, whatever the study's name holds
        "def build_model(hp: keras_tuner.HyperParameters) -> keras.Model:",
    ]
    for name, value in values.items():
        if name in MODEL_NAMES or name in per_layer:
            lines.append(f"    {name} = hp.Fixed({name!r}, {value!r})")
        elif name == "batch_size":
            lines.append(f"    batch_size = hp.Fixed({name!r}, {value!r})  # pass it to fit(..., batch_size=...)")
        else:
            lines.append(f"    hp.Fixed({name!r}, {value!r})  # not read by this builder")
    for name in MODEL_NAMES:
        if name not in values:
            lines.append(f"    {name} = {DEFAULTS[name]!r}  # the service's default")
    widths = "[" + ", ".join(per_layer) + "][:hidden_layers]" if per_layer else "[neurons] * hidden_layers"
    lines += [
        f"    inputs = keras.Input(shape=({n_features},))",
        "    # The service standardises inputs with a Normalization layer adapted on the training split:",
        "    # adapt one on your data (layer.adapt(x_train)) and put it here.",
        "    x = wide = inputs",
        "    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None",
        f"    for width in {widths}:",
        "        x = keras.layers.Dense(width, activation=activation, kernel_regularizer=regularizer)(x)",
        "        if dropout > 0:",
        "            x = keras.layers.Dropout(dropout)(x)",
    ]
    if task.get("architecture") == "wide_deep":
        lines.append("    if hidden_layers > 0:  # wide & deep: the input beside the last hidden layer")
        lines.append("        x = keras.layers.Concatenate()([wide, x])")
    if task_type == "regression" and task.get("scale_target", True):
        lines += [
            "    # The service trains on the standardized target (task.scale_target): fit on (y - mean) / std",
            "    # of y_train, or end with keras.layers.Rescaling(std, offset=mean) before the output activation.",
        ]
    lines += [
        f"    outputs = keras.layers.Dense({n_outputs}, activation={activation!r})(x)",
        "    model = keras.Model(inputs, outputs)",
        '    config = {"learning_rate": learning_rate, **({"momentum": momentum} if optimizer == "sgd" else {})}',
        "    model.compile(",
        '        optimizer=keras.optimizers.get({"class_name": optimizer, "config": config}),',
        f"        loss={loss!r},",
        f"        metrics={metrics!r},",
        "    )",
        "    return model",
        "",
    ]
    return "\n".join(lines)


def hypermodel_snippet(
    model: Mapping[str, Any],
    values: Mapping[str, Any],
    *,
    input_shape: tuple[int, ...],
    n_outputs: int,
    title: str,
) -> str:
    """Python source that builds an installed hypermodel (``model`` as stored: name, target, package)
    with the best trial's values, passing the data set's shape as the workers did."""
    target = str(model.get("target") or "")
    module, _, attr = target.partition(":")
    name = attr.split(".")[-1] or "build_model"
    pinned = {k: v for k, v in values.items() if not k.startswith(TUNER_PREFIX)}
    package = model.get("package") or "its package"
    lines = [
        "import inspect",
        "",
        "import keras_tuner",
        "",
        f"from {module or 'your_package'} import {name}",
        "",
        f"# {' '.join(title.split())}",
        f"# hypermodel {model.get('hypermodel')!r} from {package} {model.get('version') or ''}".rstrip(),
        "hp = keras_tuner.HyperParameters()",
        f"hp.values.update({pinned!r})",
        "# The workers pass the data set's shape to a class or function that declares these arguments:",
        f"context = {{'input_shape': {input_shape!r}, 'num_classes': {n_outputs}, 'num_outputs': {n_outputs}}}",
        f"accepted = {{k: v for k, v in context.items() if k in inspect.signature({name}).parameters}}",
        f"if inspect.isclass({name}):",
        f"    hypermodel = {name}(**accepted)",
        "    model = hypermodel.build(hp)  # train with hypermodel.fit(hp, model, x, y, ...) to keep its own fit",
        "else:",
        f"    model = {name}(hp, **accepted)",
        "",
    ]
    return "\n".join(lines)
