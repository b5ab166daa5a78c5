"""Hyperband (Li et al., 2018) as Keras Tuner's ``HyperbandOracle`` runs it, kept in a small state of its own.

A bracket starts ``size(b, 0)`` random configurations trained for ``epochs(b, 0)`` epochs; each later round
continues the best of the previous round's finished trials (from their checkpoints) for more epochs, until
the last round of the bracket trains ``max_epochs``. Brackets run from the most exploratory (``b`` = number
of brackets - 1) to ``b`` = 0, ``hyperband_iterations`` times. A round waits for enough of the previous
round's results, and meanwhile the next bracket starts, exactly as Keras Tuner's oracle does.

The state is Keras Tuner's own bookkeeping of its *incomplete* brackets (which trial holds which slot of
which round, and which trial it continued), the current bracket and the iteration: bounded by the brackets'
sizes, not by the study's trials. The scores it ranks come from the trial rows of those brackets alone
(:meth:`~tuner_service.store.StudyTransaction.ranked_results`), and new configurations are random draws
(:func:`tuner_service.proposals.draw`). So no oracle is restored and a claim costs the same however many
trials the study has. A study stored with a Keras Tuner oracle's state continues from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

STATE_KEY = "hyperband"
# What next() answers when it has no trial to start: wait for running trials, or the search is over.
WAIT = "wait"
STOPPED = "stopped"


@dataclass(frozen=True)
class Result:
    """What a bracket needs of one of its trials: whether it finished with a score, the score signed so that
    smaller is better (``sort_key``), and its values."""

    completed: bool
    sort_key: float | None
    values: dict[str, Any]


@dataclass
class Hyperband:
    max_epochs: int
    factor: int = 3
    iterations: float = 1
    brackets: list[dict[str, Any]] = field(default_factory=list)
    current_bracket: int = -1
    current_iteration: int = 0

    @classmethod
    def of(cls, options: dict[str, Any], state: dict[str, Any] | None) -> Hyperband:
        """The study's Hyperband: from its stored state (its own, or a Keras Tuner oracle's), else a new one."""
        state = state or {}
        hb = cls(int(options["max_epochs"]), int(options.get("factor", 3)), options.get("hyperband_iterations") or 1)
        saved = state.get(STATE_KEY) or (state if "current_bracket" in state else None)
        if saved is None:
            hb.current_bracket = hb.num_brackets() - 1
            hb._start_new_bracket()
        else:
            hb.brackets = [
                {"bracket_num": b["bracket_num"], "rounds": [[dict(slot) for slot in r] for r in b["rounds"]]}
                for b in saved["brackets"]
            ]
            hb.current_bracket, hb.current_iteration = saved["current_bracket"], saved["current_iteration"]
        return hb

    def to_json(self) -> dict[str, Any]:
        return {
            "brackets": self.brackets,
            "current_bracket": self.current_bracket,
            "current_iteration": self.current_iteration,
        }

    def num_brackets(self) -> int:
        epochs, brackets = float(self.max_epochs), 0
        while epochs >= 1:
            epochs /= self.factor
            brackets += 1
        return brackets

    def size(self, bracket: int, round_num: int) -> int:
        end_size0 = math.ceil(1 + math.log(self.max_epochs, self.factor))
        return math.ceil(end_size0 / (bracket + 1) * self.factor ** (bracket - round_num))

    def epochs(self, bracket: int, round_num: int) -> int:
        return math.ceil(self.max_epochs / self.factor ** (bracket - round_num))

    def candidates(self) -> list[str]:
        """The trials whose results the next decision may rank: in every incomplete bracket, the trials of each
        round not yet continued by the next round, where there are more of them than the next round leaves out
        (Keras Tuner promotes only when more than that many have completed). A round with fewer cannot promote
        whatever their results, so it needs no read, nor does a claim that only fills a first round."""
        wanted: list[str] = []
        for bracket in self.brackets:
            b, rounds = bracket["bracket_num"], bracket["rounds"]
            for round_num in range(1, len(rounds)):
                open_ids = self._unselected(rounds, round_num)
                if len(open_ids) > self.size(b, round_num - 1) - self.size(b, round_num):
                    wanted.extend(open_ids)
        return wanted

    def next(
        self,
        trial_id: str,
        results: Mapping[str, Result] | Callable[[list[str]], Mapping[str, Result]],
        draw: Callable[[], dict[str, Any] | str],
        running: int,
    ) -> dict[str, Any] | str:
        """The values of trial ``trial_id`` (a promotion or a new configuration from ``draw``), or :data:`WAIT`
        / :data:`STOPPED`. Keras Tuner's ``HyperbandOracle.populate_space``, step for step. ``results``: those of
        the trials, or a function that reads those of the ids it is given (the :meth:`candidates`), called
        only when a promotion is decided and only if a round may promote (a claim that fills a first round
        reads none)."""
        self.brackets = [b for b in self.brackets if not self._complete(b)]
        read: Mapping[str, Result] | None = None
        for bracket in self.brackets:
            b, rounds = bracket["bracket_num"], bracket["rounds"]
            if len(rounds[0]) < self.size(b, 0):
                return self._random_trial(trial_id, bracket, draw, running)
            if read is None and not callable(results):
                read = results
            elif read is None:  # a round left out of the candidates cannot promote: its trials are not read
                wanted = self.candidates()
                read = results(wanted) if wanted else {}
            for round_num in range(1, len(rounds)):
                open_ids = self._unselected(rounds, round_num)
                candidates = [(i, read[i]) for i in open_ids if i in read and read[i].completed]
                if len(candidates) > self.size(b, round_num - 1) - self.size(b, round_num):
                    best_id, best = min(candidates, key=lambda c: c[1].sort_key)  # the first of equals, as sorted()
                    values = {
                        **best.values,
                        "tuner/trial_id": best_id,
                        "tuner/epochs": self.epochs(b, round_num),
                        "tuner/initial_epoch": self.epochs(b, round_num - 1),
                        "tuner/bracket": self.current_bracket,
                        "tuner/round": round_num,
                    }
                    rounds[round_num].append({"past_id": best_id, "id": trial_id})
                    return values
        if self.current_bracket == 0 and self.current_iteration + 1 >= self.iterations:
            return WAIT if running else STOPPED
        self.current_bracket -= 1
        if self.current_bracket < 0:
            self.current_bracket = self.num_brackets() - 1
            self.current_iteration += 1
        self._start_new_bracket()
        return self._random_trial(trial_id, self.brackets[-1], draw, running)

    @staticmethod
    def _unselected(rounds: list[list[dict[str, Any]]], round_num: int) -> list[str]:
        """The ids of round ``round_num - 1``'s trials that round ``round_num`` has not continued, in order."""
        selected = {slot["past_id"] for slot in rounds[round_num]}
        return [slot["id"] for slot in rounds[round_num - 1] if slot["id"] not in selected]

    def _complete(self, bracket: dict[str, Any]) -> bool:
        rounds = bracket["rounds"]
        return len(rounds[-1]) == self.size(bracket["bracket_num"], len(rounds) - 1)

    def _start_new_bracket(self) -> None:
        self.brackets.append(
            {"bracket_num": self.current_bracket, "rounds": [[] for _ in range(self.current_bracket + 1)]}
        )

    def _random_trial(
        self, trial_id: str, bracket: dict[str, Any], draw: Callable[[], dict[str, Any] | str], running: int
    ) -> dict[str, Any] | str:
        values = draw()
        if not isinstance(values, dict):
            return WAIT if running else STOPPED
        bracket["rounds"][0].append({"past_id": None, "id": trial_id})
        return {
            **values,
            "tuner/epochs": self.epochs(bracket["bracket_num"], 0),
            "tuner/initial_epoch": 0,
            "tuner/bracket": self.current_bracket,
            "tuner/round": 0,
        }
