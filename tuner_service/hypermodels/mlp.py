"""The built-in hypermodel: the service's declarative MLP (and wide & deep), as one hypermodel among others.

Unlike an installed hypermodel it is configured by the study's task (loss, metrics, normalization) and its
search space is whatever the study sends; MLP_DECLARED_SPACE is only what it offers when a study sends none.
"""

from __future__ import annotations

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
        validation = kwargs.pop("validation_data", None)
        if validation is not None:
            validation = (validation[0].reshape(len(validation[0]), -1), validation[1])
        return model.fit(x, y, validation_data=validation, batch_size=batch_size(hp.values), **kwargs)

    def inputs(self, x: np.ndarray, image_shape: tuple[int, ...] | None) -> np.ndarray:
        return x  # the MLP takes the flattened rows the split already holds
