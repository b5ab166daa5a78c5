"""The dashboard's snippet for a study of an installed hypermodel builds the best trial's model as is."""

from __future__ import annotations

import pytest

from tuner_service.dashboard.snippet import hypermodel_snippet

pytest.importorskip("example_hypermodels", reason="pip install -e examples/hypermodels")


@pytest.mark.parametrize(
    ("target", "values", "shape", "kind"),
    [
        ("example_hypermodels.cnn:CNNHyperModel", {"conv_blocks": 2, "filters_1": 24, "tuner/epochs": 2}, (8, 8, 1), 4),
        ("example_hypermodels.wide_deep:build_model", {"deep_layers": 1, "units_0": 48}, (13,), 2),
    ],
)
def test_the_snippet_builds_the_hypermodel_with_the_best_values(target, values, shape, kind) -> None:
    model = {"hypermodel": "x", "target": target, "package": "tuner-service-example-hypermodels", "version": "0.1.0"}
    source = hypermodel_snippet(model, values, input_shape=shape, n_outputs=3, title="Best trial #4 of study 1")
    assert "tuner/epochs" not in source
    namespace: dict = {}
    exec(compile(source, "snippet", "exec"), namespace)
    built = namespace["model"]
    assert built.input_shape == (None, *shape) and built.output_shape == (None, 3)
    assert len(built.input_shape) == kind
    assert all(namespace["hp"].values[k] == v for k, v in values.items() if not k.startswith("tuner/"))
