"""Asynchronous successive halving (Li et al., 2018), decided from the trial rows.

Rungs train for ``min_epochs · η^k`` epochs (the last one ``max_epochs``). Whenever a worker asks for a
trial, a finished trial in the top 1/η of its rung that was not promoted yet is promoted at once: a new
trial that resumes from its checkpoint and trains up to the next rung. Nobody waits for a rung to fill.
Otherwise a new configuration starts at the bottom rung: a random draw (:func:`tuner_service.proposals.draw`),
or, with a model ``sampler`` (``bayesian``, ``tpe``), a proposal computed outside the locks
(:mod:`tuner_service.proposals`).

The claim keeps no oracle: which trial to promote is one statement over the study's trial rows
(:meth:`~tuner_service.store.StudyTransaction.asha_promotion`), since a trial's rung and the trial it resumes
are its ``tuner/rung`` and ``tuner/trial_id`` values (and a trial that one resumes is flagged ``promoted``). Each
rung's best trial not promoted yet is the first entry of an index, and its place in the rung an index-only count,
so a claim reads no trial rows but the candidates'; a study stored with a Keras Tuner oracle's state continues
from its rows alike.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Rungs:
    """A study's ASHA settings (the defaults are the oracle's)."""

    min_epochs: int = 1
    max_epochs: int = 27
    reduction_factor: int = 3

    @classmethod
    def of(cls, options: dict[str, Any]) -> Rungs:
        return cls(**{k: int(options[k]) for k in ("min_epochs", "max_epochs", "reduction_factor") if k in options})

    @property
    def epochs(self) -> list[int]:
        return rung_epochs(self.min_epochs, self.max_epochs, self.reduction_factor)

    def budget(self, rung: int, resume_from: str | None = None) -> dict[str, Any]:
        """The ``tuner/`` values of a trial at ``rung`` (resuming ``resume_from``'s checkpoint when promoted)."""
        epochs = self.epochs
        values: dict[str, Any] = {
            "tuner/epochs": epochs[rung],
            "tuner/initial_epoch": epochs[rung - 1] if rung > 0 else 0,
            "tuner/rung": rung,
        }
        if resume_from is not None:
            values["tuner/trial_id"] = resume_from
        return values

    def promoted(self, parent_values: dict[str, Any], rung: int, parent_id: str) -> dict[str, Any]:
        """The values of the trial that continues ``parent_id`` (finished at ``rung``) up to the next rung."""
        values = {k: v for k, v in parent_values.items() if not k.startswith("tuner/")}
        return {**values, **self.budget(rung + 1, resume_from=parent_id)}
