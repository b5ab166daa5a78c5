"""Asynchronous successive halving (Li et al., 2018) as a Keras Tuner oracle.

Rungs train for ``min_epochs · η^k`` epochs (the last one ``max_epochs``). Whenever a worker asks for a
trial, a finished trial in the top 1/η of its rung that was not promoted yet is promoted at once: a new
trial that resumes from its checkpoint and trains up to the next rung. Nobody waits for a rung to fill.
Otherwise a new configuration starts at the bottom rung: drawn by the base oracle (random search), or, with a
model ``sampler`` (``bayesian``, ``tpe``), handed in as ``proposed`` by the claim, which takes it from the
proposals computed outside the locks (:mod:`tuner_service.proposals`). Imports Keras Tuner: only workers use
it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

TUNER_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/trial_id", "tuner/rung", "tuner/bracket", "tuner/round")


def rung_epochs(min_epochs: int, max_epochs: int, reduction_factor: int) -> list[int]:
    """Epochs trained by the end of each rung: min_epochs · η^k below max_epochs, then max_epochs."""
    epochs, out = min_epochs, []
    while epochs < max_epochs:
        out.append(epochs)
        epochs *= reduction_factor
    out.append(max_epochs)
    return out


def asha_oracle_class(base: type) -> type:
    """An ASHA oracle whose new configurations come from ``base`` (a Keras Tuner oracle class)."""

    class ASHAOracle(base):  # type: ignore[misc, valid-type]
        def __init__(self, *, min_epochs: int = 1, max_epochs: int = 27, reduction_factor: int = 3, **kwargs: Any):
            super().__init__(**kwargs)
            self.min_epochs = min_epochs
            self.max_epochs = max_epochs
            self.reduction_factor = reduction_factor
            self.rung_of: dict[str, int] = {}
            self.promoted: list[str] = []
            # A new configuration given by the claim (a model's proposal, or EXHAUSTED), instead of the base's.
            self.proposed: dict[str, Any] | str | None = None

        @property
        def rungs(self) -> list[int]:
            return rung_epochs(self.min_epochs, self.max_epochs, self.reduction_factor)

        def populate_space(self, trial_id: str) -> dict[str, Any]:
            promotion = self._promotion()
            if promotion is not None:
                parent, rung = promotion
                values = {k: v for k, v in parent.hyperparameters.values.items() if not k.startswith("tuner/")}
                values.update(self._budget(rung + 1, resume_from=parent.trial_id))
                self.rung_of[trial_id] = rung + 1
                self.promoted.append(parent.trial_id)
                return {"status": "RUNNING", "values": values}
            if self.proposed is None:
                response = super().populate_space(trial_id)
            elif isinstance(self.proposed, dict):
                response = {"status": "RUNNING", "values": dict(self.proposed)}
            else:  # the proposer has no configuration left
                response = {"status": "STOPPED", "values": None}
            self.proposed = None
            if response["status"] == "RUNNING":
                response["values"] = {**response["values"], **self._budget(0)}
                self.rung_of[trial_id] = 0
            elif response["status"] == "STOPPED" and self.ongoing_trials:
                # No new configuration, but a running trial may still earn a promotion.
                return {"status": "IDLE"}
            return response

        def promotion_ready(self) -> bool:
            """Whether the next trial is a promotion (then no new configuration is needed)."""
            return self._promotion() is not None

        def _budget(self, rung: int, resume_from: str | None = None) -> dict[str, Any]:
            rungs = self.rungs
            values: dict[str, Any] = {
                "tuner/epochs": rungs[rung],
                "tuner/initial_epoch": rungs[rung - 1] if rung > 0 else 0,
                "tuner/rung": rung,
            }
            if resume_from is not None:
                values["tuner/trial_id"] = resume_from
            return values

        def _promotion(self) -> tuple[Any, int] | None:
            """The best not-yet-promoted trial in the top 1/η of the highest rung that has one."""
            for rung in reversed(range(len(self.rungs) - 1)):
                finished = [
                    trial
                    for trial_id, trial in self.trials.items()
                    if self.rung_of.get(trial_id) == rung
                    and trial.status == "COMPLETED"
                    and trial.score is not None
                    and math.isfinite(trial.score)
                ]
                top = len(finished) // self.reduction_factor
                ranked = sorted(finished, key=lambda t: t.score, reverse=self.objective.direction == "max")
                for trial in ranked[:top]:
                    if trial.trial_id not in self.promoted:
                        return trial, rung
            return None

        def _compute_values_hash(self, values: dict[str, Any]) -> str:
            # A promotion repeats its parent's configuration on purpose: it is not a duplicate.
            trimmed = {k: v for k, v in copy.copy(values).items() if not k.startswith("tuner/")}
            return super()._compute_values_hash(trimmed)

        def get_state(self) -> dict[str, Any]:
            state = super().get_state()
            state["asha"] = {
                "min_epochs": self.min_epochs,
                "max_epochs": self.max_epochs,
                "reduction_factor": self.reduction_factor,
                "rung_of": dict(self.rung_of),
                "promoted": list(self.promoted),
            }
            return state

        def set_state(self, state: dict[str, Any]) -> None:
            super().set_state(state)
            asha = state["asha"]
            self.min_epochs, self.max_epochs = asha["min_epochs"], asha["max_epochs"]
            self.reduction_factor = asha["reduction_factor"]
            self.rung_of = dict(asha["rung_of"])
            self.promoted = list(asha["promoted"])

    return ASHAOracle
