"""Search quality at an equal epoch budget: Keras Tuner, Optuna and the service's own algorithms.

Every contender searches the classic space (hidden layers 0..8, neurons 16..256 log, learning rate
1e-4..1e-2 log, sgd/adam, batch 32/64/128) with models built by ``tuner_service.hypermodel.build_model`` and
the same early stopping, and every epoch it trains counts against one fixed budget, including epochs of
pruned, early-stopped and budget-stopped trials. The service's contenders run its real core in process
(``submit_study``, then ``claim_next`` → ``train_trial`` → ``finish_trial`` on a SQLite store, which is a
worker minus the broker). The runs happen in ``bench/quality_runs.py`` processes, two at a time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import REPO, md_table

NAME = "search_quality"
TITLE = "Search quality at an equal epoch budget"
PARALLEL = 2  # processes at a time (one TensorFlow thread each): this machine has 2 cores

LABELS = {
    "kt_random": "Keras Tuner RandomSearch",
    "kt_bayesian": "Keras Tuner BayesianOptimization",
    "kt_hyperband": "Keras Tuner Hyperband",
    "optuna_tpe": "Optuna TPE + MedianPruner",
    "svc_random": "service `random`",
    "svc_bayesian": "service `bayesian`",
    "svc_tpe": "service `tpe`",
    "svc_hyperband": "service `hyperband`",
    "svc_asha": "service `asha`",
}
FAMILIES = {
    "others": ["kt_random", "kt_bayesian", "kt_hyperband", "optuna_tpe"],
    "service": ["svc_random", "svc_bayesian", "svc_tpe", "svc_hyperband", "svc_asha"],
}
# Per task: epoch budget per run and the longest a trial may train (every contender's cap: RandomSearch,
# Bayesian and Optuna fit up to it with early stopping, Hyperband's max_epochs, ASHA's top rung). Sized so that the
# whole benchmark takes about 70 minutes on 2 shared cores: digits (the headline) and the 20,000-row synthetic
# task about 20 minutes each, the three small sets about 7 each.
FULL = {
    "seeds": [1, 2, 3, 4, 5],
    "tasks": {
        "digits": {"budget": 120, "max_epochs": 9},
        "synthetic_20k": {"budget": 60, "max_epochs": 6},
        "breast_cancer": {"budget": 40, "max_epochs": 4},
        "diabetes": {"budget": 40, "max_epochs": 4},
        "wine": {"budget": 40, "max_epochs": 4},
    },
}
# The smoke run: every contender once on one task (the regression path is smoke-tested by target_scaling).
QUICK = {
    "seeds": [1],
    "tasks": {
        "digits": {"budget": 4, "max_epochs": 2},
    },
}
PATIENCE = 3
HYPERBAND_FACTOR = 3
ASHA = {"min_epochs": 1, "reduction_factor": 3}


def hyperband_epochs(max_epochs: int, factor: int) -> int:
    """Epochs one Hyperband iteration trains when no trial stops early: a promoted trial trains only the
    epochs its round adds (Keras Tuner's bracket sizes, from the service's own ``hyperband_rounds``)."""
    from tuner_service.search import hyperband_rounds

    total, previous = 0, 0
    for _bracket, round_num, trials, epochs in hyperband_rounds(max_epochs, factor):
        previous = 0 if round_num == 0 else previous
        total += trials * (epochs - previous)
        previous = epochs
    return total


# -- running --------------------------------------------------------------------------------------------


def _child(spec: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    tag = f"{spec['task']}-{spec['seed']}-{spec['family']}"
    spec_path, out_path, log_path = workdir / f"{tag}.json", workdir / f"{tag}.out.json", workdir / f"{tag}.log"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    with open(log_path, "wb") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.quality_runs", str(spec_path), str(out_path)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=3600,
        )
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.startswith("[quality]")]
    for line in lines:
        print(f"[bench]   {line}", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tag} failed:\n{log_path.read_text(errors='replace')[-4000:]}")
    return json.loads(out_path.read_text())


def run(quick: bool) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    specs = []
    for task, sizes in plan["tasks"].items():
        for seed in plan["seeds"]:
            for family, contenders in FAMILIES.items():
                specs.append(
                    {
                        "task": task,
                        "seed": seed,
                        "family": family,
                        "contenders": contenders,
                        "budget": sizes["budget"],
                        "max_epochs": sizes["max_epochs"],
                        "patience": PATIENCE,
                        "hyperband_factor": HYPERBAND_FACTOR,
                        "asha_min_epochs": ASHA["min_epochs"],
                        "asha_factor": ASHA["reduction_factor"],
                    }
                )
    specs.sort(key=lambda s: -s["budget"])  # longest first, so the two slots finish together
    with tempfile.TemporaryDirectory(prefix="bench-search-quality-") as tmp, ThreadPoolExecutor(PARALLEL) as pool:
        futures = [pool.submit(_child, spec, Path(tmp)) for spec in specs]
        runs = [run for future in futures for run in future.result()]
    return analyse(runs, plan)


# -- analysis -------------------------------------------------------------------------------------------


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "max" else a < b


def best_so_far(curve: list[float | None], direction: str) -> list[float | None]:
    out: list[float | None] = []
    best = None
    for value in curve:
        if value is not None and (best is None or _better(value, best, direction)):
            best = value
        out.append(best)
    return out


def epochs_to(curve: list[float | None], target: float | None, direction: str) -> int | None:
    """The first epoch (1-based, counted over the whole run) at which the run's best reached ``target``."""
    if target is None:
        return None
    for i, best in enumerate(best_so_far(curve, direction), start=1):
        if best is not None and (best == target or _better(best, target, direction)):
            return i
    return None


def _initial_points(budget: int, max_epochs: int) -> int:
    from bench.quality_runs import SPACE
    from tuner_service.proposals import default_initial_points

    return default_initial_points(budget // max_epochs, len(SPACE))


def analyse(runs: list[dict[str, Any]], plan: dict[str, Any]) -> dict[str, Any]:
    from bench.quality_runs import TASKS

    tasks: dict[str, Any] = {}
    for task, sizes in plan["tasks"].items():
        budget = sizes["budget"]
        _type, objective, direction = TASKS[task]
        mine = [r for r in runs if r["task"] == task]
        for r in mine:
            r["cut"] = r["curve"][:budget]  # every run is judged on its first `budget` epochs only
            finals = best_so_far(r["cut"], direction)
            r["best"] = finals[-1] if finals else None
            r["epochs_counted"] = len(r["cut"])
        targets = {
            ref: {r["seed"]: r["best"] for r in mine if r["contender"] == ref} for ref in ("kt_random", "kt_hyperband")
        }
        contenders = {}
        for contender in LABELS:
            rs = sorted((r for r in mine if r["contender"] == contender), key=lambda r: r["seed"])
            if not rs:
                continue
            bests = [r["best"] for r in rs if r["best"] is not None]
            tests = [r["test"] for r in rs if r.get("test") is not None]
            contenders[contender] = {
                "seeds": [r["seed"] for r in rs],
                "best": [r["best"] for r in rs],
                "mean": statistics.fmean(bests) if bests else None,
                "sd": statistics.stdev(bests) if len(bests) > 1 else None,
                "trials": [r["trials"] for r in rs],
                "epochs_counted": [r["epochs_counted"] for r in rs],
                "epochs_trained": [len(r["curve"]) for r in rs],
                "wall_s": [r["wall_s"] for r in rs],
                "statuses": [r["statuses"] for r in rs],
                "ended": [r["ended"] for r in rs],
                "store_best": [r.get("store_best") for r in rs],
                "to_kt_random": [epochs_to(r["cut"], targets["kt_random"].get(r["seed"]), direction) for r in rs],
                "to_kt_hyperband": [epochs_to(r["cut"], targets["kt_hyperband"].get(r["seed"]), direction) for r in rs],
                "curves": [r["curve"] for r in rs],
                "test": [r.get("test") for r in rs],
                "test_mean": statistics.fmean(tests) if tests else None,
                "test_sd": statistics.stdev(tests) if len(tests) > 1 else None,
                "val_again": [r.get("val_again") for r in rs],
                "model_beyond_budget": [r.get("model_beyond_budget", False) for r in rs],
            }
        tasks[task] = {
            "objective": objective,
            "direction": direction,
            "budget": budget,
            "max_epochs": sizes["max_epochs"],
            "hyperband_iteration_epochs": hyperband_epochs(sizes["max_epochs"], HYPERBAND_FACTOR),
            "initial_points": _initial_points(budget, sizes["max_epochs"]),
            "targets": targets,
            "contenders": contenders,
        }
    from bench.quality_runs import SYNTHETIC_20K, TEST_FRACTION, TEST_SEED

    return {
        "seeds": plan["seeds"],
        "test_fraction": TEST_FRACTION,
        "test_seed": TEST_SEED,
        "synthetic_20k": SYNTHETIC_20K,
        "patience": PATIENCE,
        "hyperband_factor": HYPERBAND_FACTOR,
        "asha": ASHA,
        "parallel": PARALLEL,
        "tasks": tasks,
    }


# -- report ---------------------------------------------------------------------------------------------


def _fmt(value: float | None, objective: str) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if objective == "val_mae" else f"{value:.4f}"


def _reach(values: list[int | None]) -> str:
    return " / ".join("not reached" if v is None else str(v) for v in values)


def markdown(result: dict[str, Any]) -> str:
    parts = [_setup(result)]
    for task, data in result["tasks"].items():
        obj = data["objective"]
        rows = []
        for contender, c in data["contenders"].items():
            sd = f" ± {_fmt(c['sd'], obj)}" if c["sd"] is not None else ""
            rows.append(
                [
                    LABELS[contender],
                    f"**{_fmt(c['mean'], obj)}**{sd}",
                    " / ".join(_fmt(v, obj) for v in c["best"]),
                    " / ".join(str(t) for t in c["trials"]),
                    _reach(c["to_kt_random"]),
                    _reach(c["to_kt_hyperband"]),
                    f"{statistics.fmean(c['wall_s']):.0f} s",
                ]
            )
        arrow = "higher" if data["direction"] == "max" else "lower"
        parts.append(
            f"**{task}**: best `{obj}` ({arrow} is better) within {data['budget']} epochs; trials train at most "
            f"{data['max_epochs']} epochs (Hyperband `max_epochs={data['max_epochs']}`, factor "
            f"{result['hyperband_factor']}: {data['hyperband_iteration_epochs']} epochs per iteration without early "
            f"stops; ASHA rungs {_rungs(data['max_epochs'], result)})."
        )
        parts.append(
            md_table(
                [
                    "contender",
                    "best (mean ± sd over seeds)",
                    "per seed " + "/".join(str(s) for s in result["seeds"]),
                    "trials run per seed",
                    "epochs to KT RandomSearch's best, per seed",
                    "epochs to KT Hyperband's best, per seed",
                    "wall per run",
                ],
                rows,
            )
        )
    parts.append(_reading(result))
    return "\n\n".join(parts)


def _rungs(max_epochs: int, result: dict[str, Any]) -> str:
    from tuner_service.asha import rung_epochs

    rungs = rung_epochs(result["asha"]["min_epochs"], max_epochs, result["asha"]["reduction_factor"])
    return " → ".join(map(str, rungs)) + f" epochs, η {result['asha']['reduction_factor']}"


def _setup(result: dict[str, Any]) -> str:
    return (
        "Three tasks on built-in data sets, validation fraction 0.2 (split seed 0), inputs standardised as the "
        "service does: `digits` (multiclass, 360 validation rows: one sample is 0.0028 of accuracy), "
        "`breast_cancer` (binary, 114 rows: 0.0088), `diabetes` (regression, `val_mae`, minimised). The classic "
        "space: `hidden_layers` int 0..8, `neurons` int 16..256 log, `learning_rate` float 1e-4..1e-2 log, "
        "`optimizer` sgd/adam (no momentum), `batch_size` 32/64/128. Every model is "
        "`tuner_service.hypermodel.build_model`, with `EarlyStopping(patience="
        f"{result['patience']}, restore_best_weights=True)` on the objective. "
        "**The budget counts every epoch trained**, in training order, including epochs of pruned, early-stopped "
        "and budget-stopped trials and of resumed Hyperband/ASHA rounds; a run is judged on its first *budget* "
        "epochs only (the in-process contenders stop training at the budget; the service loop stops claiming "
        "once the store counts it, and epochs of its last trial beyond it are ignored). **Best** = the best "
        "validation objective of any epoch within the budget, which is each tuner's own best trial score "
        "(Keras Tuner, Optuna and the service all score a trial by its best epoch; Optuna's pruned trials count "
        "with their reported values, as the service's pruned trials do). **Epochs to X's best**: the first "
        "epoch of the run at which its best reached the best that Keras Tuner's RandomSearch (resp. Hyperband) "
        "reached with the same seed; *not reached* when it never did within the budget. "
        "Contenders: Keras Tuner `RandomSearch`, `BayesianOptimization` (defaults) and `Hyperband` in one "
        "process (a `kt.HyperModel` around `build_model`, batch size passed to `fit`); Optuna "
        f"`TPESampler(seed)` with `MedianPruner()` (defaults); the service's `random`, `bayesian`, `hyperband` "
        f"and `asha` (sampler random) driven in process: `submit_study` on a SQLite store, then `claim_next` → "
        "`train_trial` → `finish_trial` until the store holds the budget's epochs (a worker minus the broker). "
        f"Seeds {', '.join(map(str, result['seeds']))} (the tuner's, the study's and Optuna's seed). "
        f"Runs are processes of one TensorFlow thread, {result['parallel']} at a time; wall times are per run "
        "and only indicative."
    )


def _reading(result: dict[str, Any]) -> str:
    lines = []
    digits = result["tasks"].get("digits")
    if digits and "svc_asha" in digits["contenders"]:
        asha = digits["contenders"]["svc_asha"]
        for ref, key in (("Keras Tuner RandomSearch", "to_kt_random"), ("Keras Tuner Hyperband", "to_kt_hyperband")):
            reached = [v for v in asha[key] if v is not None]
            ref_key = "kt_random" if key == "to_kt_random" else "kt_hyperband"
            ref_own = digits["contenders"].get(ref_key, {}).get(key, [])
            lines.append(
                f"- **digits, ASHA against {ref}**: reached {ref}'s best in {len(reached)} of {len(asha[key])} seeds "
                f"(epochs per seed: {_reach(asha[key])}; {ref} itself got there at {_reach(ref_own)})."
            )
    for task, data in result["tasks"].items():
        lines.append(_task_reading(task, data))
    lines.append("")
    lines.append("**Why, as far as these runs show.**")
    lines.append("")
    lines.extend(_why(result))
    return "**Reading.**\n\n" + "\n".join(lines)


def _spread(c: dict[str, Any]) -> float:
    return c["sd"] or 0.0


def _task_reading(task: str, data: dict[str, Any]) -> str:
    """Ranking by the mean, and which outside contenders beat the best service contender beyond the seed spread."""
    cs = {k: v for k, v in data["contenders"].items() if v["mean"] is not None}
    direction, obj = data["direction"], data["objective"]
    ranked = sorted(cs, key=lambda k: cs[k]["mean"], reverse=direction == "max")
    line = f"- **{task}**, ranked by mean: " + ", ".join(f"{LABELS[k]} {_fmt(cs[k]['mean'], obj)}" for k in ranked)
    service = [k for k in ranked if k.startswith("svc_")]
    if not service:
        return line + "."
    top = service[0]
    clear, close = [], []
    for k in ranked:
        if k.startswith("svc_") or not _better(cs[k]["mean"], cs[top]["mean"], direction):
            continue
        gap = abs(cs[k]["mean"] - cs[top]["mean"])
        (clear if gap > max(_spread(cs[k]), _spread(cs[top])) else close).append(k)
    if clear:
        line += (
            f". Beating the best service contender ({LABELS[top]}) by more than the seed-to-seed spread: "
            + ", ".join(LABELS[k] for k in clear)
        )
    if close:
        line += f". Ahead of {LABELS[top]} on the mean but within the spread: " + ", ".join(LABELS[k] for k in close)
    if not clear and not close:
        line += f". Nothing outside the service beat {LABELS[top]} on the mean"
    return line + "."


def _shared_prefix(data: dict[str, Any], a: str, b: str) -> tuple[int, int] | None:
    """Fewest epochs two contenders' runs share from the start (over seeds), and the budget."""
    cs = data["contenders"]
    if a not in cs or b not in cs:
        return None
    shared = []
    for x, y in zip(cs[a]["curves"], cs[b]["curves"], strict=False):
        n = 0
        while n < min(len(x), len(y), data["budget"]) and x[n] == y[n]:
            n += 1
        shared.append(n)
    return (min(shared), data["budget"]) if shared else None


def _pair_gap(data: dict[str, Any], a: str, b: str) -> float | None:
    cs = data["contenders"]
    if a not in cs or b not in cs:
        return None
    gaps = [abs(x - y) for x, y in zip(cs[a]["best"], cs[b]["best"], strict=False) if x is not None and y is not None]
    return max(gaps) if gaps else None


def _failed(c: dict[str, Any]) -> int:
    return sum(n for statuses in c["statuses"] for status, n in statuses.items() if status.lower().startswith("fail"))


def _why(result: dict[str, Any]) -> list[str]:
    tasks = result["tasks"]
    lines = []
    same = []
    for task, data in tasks.items():
        kt, svc = _shared_prefix(data, "kt_random", "kt_bayesian"), _shared_prefix(data, "svc_random", "svc_bayesian")
        if kt and svc:
            same.append(f"{task}: at least {kt[0]} (Keras Tuner) and {svc[0]} (service) of {kt[1]} epochs")
    if same:
        lines.append(
            "- **Bayesian optimisation is random search at these budgets.** Keras Tuner's "
            "`BayesianOptimizationOracle` (which the service's `bayesian` also is) draws `num_initial_points` = "
            "3 × 5 hyperparameters = 15 random trials before its Gaussian process proposes anything, and a run here "
            "holds 10 to 17 trials, so each `bayesian` run repeats the `random` run of the same seed epoch for epoch "
            f"({'; '.join(same)}). A study with a budget this small should set `num_initial_points` to about 5."
        )
    gaps = []
    for task, data in tasks.items():
        obj = data["objective"]
        g_rs, g_hb = _pair_gap(data, "kt_random", "svc_random"), _pair_gap(data, "kt_hyperband", "svc_hyperband")
        if g_rs is not None and g_hb is not None:
            gaps.append(f"{task} up to {_fmt(g_rs, obj)} (random) and {_fmt(g_hb, obj)} (Hyperband)")
    if gaps:
        lines.append(
            "- **The noise floor.** With the same seed, the service's `random` draws exactly the configurations "
            "Keras Tuner's RandomSearch draws, in the same order (the same oracle on the same space: checked by "
            "asking both oracles directly), and its `hyperband` draws the same new configurations as Keras "
            "Tuner's Hyperband (which ones it promotes then follows the scores). The pairs differ in the weights "
            "and shuffling: the service seeds every trial from the study's seed and the trial number, Keras Tuner "
            "in one process draws from one stream, and early stopping then cuts trials at different epochs. The "
            "gap within a pair is therefore "
            "luck, not search: per seed, " + "; ".join(gaps) + ". Differences between contenders smaller than that "
            "say nothing about the algorithms, and with three seeds most of the differences above are of that size."
        )
    digits = tasks.get("digits", {})
    if "svc_asha" in digits.get("contenders", {}):
        a = digits["contenders"]["svc_asha"]
        ranked = sorted(
            (k for k, v in digits["contenders"].items() if v["mean"] is not None),
            key=lambda k: digits["contenders"][k]["mean"],
            reverse=digits["direction"] == "max",
        )
        trials = " / ".join(map(str, a["trials"]))
        lines.append(
            f"- **ASHA on digits** tries many more configurations for the same epochs ({trials} trials, most of "
            "them one epoch long, against 15 to 17 for random search). On digits one epoch already separates the "
            "learning rates and optimizers that will work from those that will not, so promoting the top third "
            f"rung by rung finds good configurations early: its mean ranks {ranked.index('svc_asha') + 1} of "
            f"{len(ranked)}, and it reached RandomSearch's best within the budget in "
            f"{sum(v is not None for v in a['to_kt_random'])} of {len(a['to_kt_random'])} seeds."
        )
    diabetes = tasks.get("diabetes", {}).get("contenders", {})
    if "svc_asha" in diabetes:
        a = diabetes["svc_asha"]
        lines.append(
            "- **Diabetes** has unscaled targets (25 to 346) and trials of at most 4 epochs: after one epoch almost "
            "every configuration still predicts about the mean (val_mae ≈ 150), and what ranks a trial is how fast "
            "it starts to move, which favours the largest learning rates, the ones most likely to diverge a few "
            f"epochs later ({_failed(a)} of ASHA's trials over the seeds ended with a non-finite objective and "
            "failed). ASHA spends its budget on those one-epoch rankings and its top rung adds a single epoch, which "
            "is why successive halving (ASHA, Hyperband, Optuna's pruner) does no better than plain random search "
            "there. A promoted ASHA or Hyperband trial also restarts its optimizer: `model.load_weights` on a "
            "freshly compiled model restores the weights but skips Adam's moments (Keras warns so), in the service "
            "as in Keras Tuner's Hyperband."
        )
    optuna = []
    for task, data in tasks.items():
        cs = {k: v for k, v in data["contenders"].items() if v["mean"] is not None}
        if "optuna_tpe" in cs:
            order = sorted(cs, key=lambda k: cs[k]["mean"], reverse=data["direction"] == "max")
            optuna.append(f"{task} {order.index('optuna_tpe') + 1} of {len(order)}")
    if optuna:
        lines.append(
            "- **Optuna** (TPE: 10 random start-up trials; MedianPruner: prunes from the first epoch once 5 trials "
            "have finished) ran more trials than random search for the same epochs by pruning (see the trial "
            f"counts); its mean ranks {', '.join(optuna)}."
        )
    return lines
