"""The model-size guard counts what the model builder makes: checked against Keras' own count."""

from __future__ import annotations

import numpy as np
import pytest

from tuner_service.model_size import Limits, fixed_size, problems, size_of, space_worst_case
from tuner_service.space import SearchSpace
from tuner_service.task import TaskSpec


@pytest.mark.parametrize(
    ("architecture", "normalize", "widths"),
    [
        ("sequential", True, (32, 16)),
        ("wide_deep", False, (8, 8, 8)),
        ("sequential", False, ()),
        ("wide_deep", True, ()),
    ],
)
def test_the_count_matches_keras(architecture: str, normalize: bool, widths: tuple[int, ...]) -> None:
    from tuner_service.hypermodel import build_model, normalization_stats

    task = TaskSpec.from_json({"type": "multiclass", "architecture": architecture, "normalize": normalize})
    values = {"hidden_layers": len(widths), **{f"neurons_{i}": w for i, w in enumerate(widths)}}
    stats = normalization_stats(np.random.default_rng(0).normal(size=(20, 12))) if normalize else None
    model = build_model(task, values, n_features=12, n_outputs=5, norm_stats=stats)
    counted = size_of(widths, n_features=12, n_outputs=5, batch_size=32, wide_deep=architecture == "wide_deep")
    assert counted.parameters == model.count_params()


def test_the_worst_case_takes_the_deepest_and_widest_values() -> None:
    space = SearchSpace.from_json(
        {
            "hidden_layers": {"type": "choice", "values": [1, 3]},
            "neurons": {"type": "int", "min": 8, "max": 100, "per_layer": True},
            "batch_size": {"type": "choice", "values": [16, 256]},
        }
    )
    size = space_worst_case(space, n_features=10, n_outputs=2, wide_deep=False)
    assert size.widths == (100, 100, 100) and size.batch_size == 256
    assert size.parameters == 10 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 2 + 2


def test_64_layers_of_8192_neurons_are_refused_on_the_fields_at_fault() -> None:
    space = SearchSpace.from_json(
        {"hidden_layers": {"type": "fixed", "value": 64}, "neurons": {"type": "int", "min": 16, "max": 8192}}
    )
    size = space_worst_case(space, n_features=64, n_outputs=10, wide_deep=False)
    assert size.parameters > 4 * 10**9
    errors = problems(size, Limits(50_000_000, 2**31), prefix="search_space.", given={"hidden_layers", "neurons"})
    assert [e.field for e in errors] == ["search_space.hidden_layers", "search_space.neurons"]
    assert "50,000,000" in errors[0].reason


def test_defaults_alone_too_big_name_the_section() -> None:
    size = fixed_size({}, n_features=10**6, n_outputs=10, wide_deep=False)
    errors = problems(size, Limits(1_000_000, 2**40), prefix="architecture.", given=set())
    assert [e.field for e in errors] == ["architecture"]
