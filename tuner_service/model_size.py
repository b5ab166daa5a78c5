"""The model-size guard: the largest model a search space (or a range test's architecture) allows, counted
at submission, so a study cannot ask workers for billions of parameters.

Each hyperparameter is bounded on its own (64 layers, 8192 neurons, batches of 65 536), but together they
allow ~4·10⁹ parameters. The worst case is the deepest network with every layer at its widest, which is
what the model builder (``hypermodel.build_model``) would make: Dense layers with biases, and for
``wide_deep`` the input fed to the output layer as well. Pure Python: the API runs it without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tuner_service.errors import FieldError
from tuner_service.space import Parameter, SearchSpace

# What the model builder uses when a space leaves a name out (hypermodel.DEFAULTS).
DEFAULT_LAYERS = 2
DEFAULT_NEURONS = 64
DEFAULT_BATCH = 32
# Activations kept for the backward pass plus their gradients, as float32.
ACTIVATION_FACTOR = 2 * 4


@dataclass(frozen=True)
class ModelSize:
    """The worst case of a space: its widths per hidden layer, parameters and activation memory."""

    widths: tuple[int, ...]
    n_features: int
    n_outputs: int
    batch_size: int
    parameters: int
    activation_bytes: int

    def describe(self) -> str:
        widest = max(self.widths, default=0)
        return (
            f"{len(self.widths)} hidden layers of up to {widest} neurons on {self.n_features} features "
            f"and {self.n_outputs} outputs"
        )


@dataclass(frozen=True)
class Limits:
    """The deployment's limits, or a team's lower ones; ``source`` says where they come from."""

    max_parameters: int
    max_activation_bytes: int
    source: str = "TUNER_MAX_MODEL_PARAMS"


def size_of(widths: tuple[int, ...], *, n_features: int, n_outputs: int, batch_size: int, wide_deep: bool) -> ModelSize:
    """Parameters and activation memory of an MLP with these hidden widths (Python ints: no overflow)."""
    parameters = 0  # Normalization's mean and variance are constants, not weights
    fan_in = n_features
    for width in widths:
        parameters += fan_in * width + width
        fan_in = width
    if wide_deep and widths:
        fan_in += n_features
    parameters += fan_in * n_outputs + n_outputs
    activations = batch_size * (n_features + sum(widths) + n_outputs) * ACTIVATION_FACTOR
    return ModelSize(widths, n_features, n_outputs, batch_size, parameters, activations)


def space_worst_case(space: SearchSpace, *, n_features: int, n_outputs: int, wide_deep: bool) -> ModelSize:
    """The largest model ``space`` can produce: most layers, each at its widest, with the largest batch."""
    params = {p.name: p for p in space.expanded()}
    layers = _largest(params.get("hidden_layers"), DEFAULT_LAYERS)
    default_width = _largest(params.get("neurons"), DEFAULT_NEURONS)
    widths = tuple(_largest(params.get(f"neurons_{i}"), default_width) for i in range(layers))
    batch = _largest(params.get("batch_size"), DEFAULT_BATCH)
    return size_of(widths, n_features=n_features, n_outputs=n_outputs, batch_size=batch, wide_deep=wide_deep)


def fixed_size(architecture: Mapping[str, object], *, n_features: int, n_outputs: int, wide_deep: bool) -> ModelSize:
    """The one model a range test trains (its architecture is fixed values)."""
    layers = int(architecture.get("hidden_layers", DEFAULT_LAYERS))  # type: ignore[call-overload]
    width = int(architecture.get("neurons", DEFAULT_NEURONS))  # type: ignore[call-overload]
    batch = int(architecture.get("batch_size", DEFAULT_BATCH))  # type: ignore[call-overload]
    return size_of(
        (width,) * layers,
        n_features=n_features,
        n_outputs=n_outputs,
        batch_size=batch,
        wide_deep=wide_deep,
    )


def problems(size: ModelSize, limits: Limits, *, prefix: str, given: set[str]) -> list[FieldError]:
    """Every limit ``size`` is over, on each field that makes it so (``prefix`` + name when the caller gave
    the name; the section itself when the defaults alone are too big)."""
    errors: list[FieldError] = []
    if size.parameters > limits.max_parameters:
        reason = (
            f"the largest model this allows ({size.describe()}) has {size.parameters:,} parameters; "
            f"the limit is {limits.max_parameters:,} ({limits.source})"
        )
        errors += _on_fields(("hidden_layers", "neurons"), given, prefix, reason)
    if size.activation_bytes > limits.max_activation_bytes:
        reason = (
            f"a batch of {size.batch_size} through the largest model ({size.describe()}) needs about "
            f"{size.activation_bytes / 2**20:,.0f} MiB of activations; the limit is "
            f"{limits.max_activation_bytes / 2**20:,.0f} MiB (TUNER_MAX_ACTIVATION_BYTES)"
        )
        errors += _on_fields(("batch_size", "hidden_layers", "neurons"), given, prefix, reason)
    return errors


def _on_fields(names: tuple[str, ...], given: set[str], prefix: str, reason: str) -> list[FieldError]:
    at_fault = [n for n in names if n in given]
    if not at_fault:
        return [FieldError(prefix.rstrip("."), reason)]
    return [FieldError(f"{prefix}{name}", reason) for name in at_fault]


def _largest(param: Parameter | None, default: int) -> int:
    if param is None:
        return default
    values = param.possible_values()
    if values:
        numbers = [int(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        return max(numbers, default=default)
    return int(param.max) if param.max is not None else default


def limits_for(max_parameters: int, max_activation_bytes: int, team_limit: int | None) -> Limits:
    """The deployment's limits, with the parameter limit lowered to the team's own when it has one."""
    if team_limit is not None and team_limit < max_parameters:
        return Limits(team_limit, max_activation_bytes, "this team's limit, set with admin set-quota")
    return Limits(max_parameters, max_activation_bytes)
