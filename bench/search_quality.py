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
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
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
    "svc_asha_tpe": "service `asha` + `tpe` sampler",
}
FAMILIES = {
    "others": ["kt_random", "kt_bayesian", "kt_hyperband", "optuna_tpe"],
    "service": ["svc_random", "svc_bayesian", "svc_tpe", "svc_hyperband", "svc_asha", "svc_asha_tpe"],
}
# Per task: epoch budget per run and the longest a trial may train (every contender's cap: RandomSearch,
# Bayesian and Optuna fit up to it with early stopping, Hyperband's max_epochs, ASHA's top rung). Sized so that the
# whole benchmark (5 tasks x 5 seeds x 10 contenders) takes about an hour on 2 cores shared with other work; what a
# run costs is mostly per trial (building and tracing a model), so the small sets get longer trials, not more.
FULL = {
    "seeds": [1, 2, 3, 4, 5],
    "tasks": {
        "digits": {"budget": 42, "max_epochs": 6},
        "synthetic_20k": {"budget": 30, "max_epochs": 5},
        "breast_cancer": {"budget": 30, "max_epochs": 6},
        "diabetes": {"budget": 30, "max_epochs": 6},
        "wine": {"budget": 30, "max_epochs": 6},
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


def _specs(plan: dict[str, Any], families: dict[str, list[str]]) -> list[dict[str, Any]]:
    specs = []
    for task, sizes in plan["tasks"].items():
        for seed in plan["seeds"]:
            for family, contenders in families.items():
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
    # Seed by seed (longest task first, so the two slots finish together): every task has its first seeds early.
    specs.sort(key=lambda s: (s["seed"], -s["budget"]))
    return specs


def _run_specs(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-search-quality-") as tmp, ThreadPoolExecutor(PARALLEL) as pool:
        futures = [pool.submit(_child, spec, Path(tmp)) for spec in specs]
        return [run for future in futures for run in future.result()]


def run(quick: bool) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    return analyse(_run_specs(_specs(plan, FAMILIES)), plan)


def rerun(stored: dict[str, Any], contenders: list[str]) -> dict[str, Any]:
    """The stored full result with ``contenders`` run again (the others' runs kept as stored): for a change
    that affects only some contenders, at a fraction of the hour the whole table takes."""
    plan = FULL
    runs = [r for r in stored_runs(stored) if r["contender"] not in contenders]
    runs += _run_specs(_specs(plan, {"rerun": contenders}))
    result = analyse(runs, plan)
    earlier = [x for x in stored.get("reruns", []) if not set(x["contenders"]) <= set(contenders)]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["reruns"] = [*earlier, {"contenders": contenders, "date": when}]
    return result


def stored_runs(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-run records that :func:`analyse` summarised, back from its result."""
    runs = []
    for task, data in result["tasks"].items():
        for contender, c in data["contenders"].items():
            for i, seed in enumerate(c["seeds"]):
                runs.append(
                    {
                        "task": task,
                        "contender": contender,
                        "seed": seed,
                        **{key: c[key][i] for key in RUN_KEYS if key in c},
                        "curve": c["curves"][i],
                    }
                )
    return runs


RUN_KEYS = ("trials", "wall_s", "statuses", "ended", "store_best", "test", "val_again", "model_beyond_budget")


# -- analysis -------------------------------------------------------------------------------------------


# Scores are Keras metrics, float32 values: an accuracy is a count of rows divided in float32, so the means of two
# contenders that got the same counts can differ in the eighth digit. Values this close are the same score.
SAME_SCORE_REL = 1e-6


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=SAME_SCORE_REL, abs_tol=1e-12)


def _better(a: float, b: float, direction: str) -> bool:
    """``a`` is a better score than ``b`` (not the same score, see :data:`SAME_SCORE_REL`)."""
    return not _same(a, b) and (a > b if direction == "max" else a < b)


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
        if best is not None and _at_least(best, target, direction):
            return i
    return None


def analyse(runs: list[dict[str, Any]], plan: dict[str, Any]) -> dict[str, Any]:
    from bench.quality_runs import TASKS, initial_points

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
            "initial_points": initial_points(budget, sizes["max_epochs"]),
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

OUTSIDE = FAMILIES["others"]
SERVICE = FAMILIES["service"]


def _fmt(value: float | None, objective: str) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if objective == "val_mae" else f"{value:.4f}"


def _reach(values: list[int | None]) -> str:
    return " / ".join("–" if v is None else str(v) for v in values)


def _mean_sd(mean: float | None, sd: float | None, objective: str, *, bold: bool = False) -> str:
    text = _fmt(mean, objective)
    text = f"**{text}**" if bold else text
    return text + (f" ± {_fmt(sd, objective)}" if sd is not None else "")


def markdown(result: dict[str, Any]) -> str:
    parts = [_setup(result)]
    for rerun_ in result.get("reruns", []):
        names = ", ".join(LABELS[c] for c in rerun_["contenders"])
        parts.append(f"Run again on {rerun_['date']} after a change that affects them alone: {names}.")
    for task, data in result["tasks"].items():
        obj = data["objective"]
        rows = []
        for contender, c in data["contenders"].items():
            rows.append(
                [
                    LABELS[contender],
                    _mean_sd(c["mean"], c["sd"], obj, bold=True),
                    _mean_sd(c.get("test_mean"), c.get("test_sd"), obj),
                    " / ".join(_fmt(v, obj) for v in c["best"]),
                    " / ".join(str(t) for t in c["trials"]),
                    _reach(c["to_kt_random"]),
                    _reach(c["to_kt_hyperband"]),
                    f"{statistics.fmean(c['wall_s']):.0f} s",
                ]
            )
        arrow = "higher" if data["direction"] == "max" else "lower"
        parts.append(
            f"**{task}**: `{obj}` ({arrow} is better) within {data['budget']} epochs; trials train at most "
            f"{data['max_epochs']} epochs (Hyperband `max_epochs={data['max_epochs']}`, factor "
            f"{result['hyperband_factor']}: {data['hyperband_iteration_epochs']} epochs per iteration without early "
            f"stops; ASHA rungs {_rungs(data['max_epochs'], result)}; `bayesian` and `tpe` start with "
            f"{data.get('initial_points', '–')} initial trials, a Latin hypercube)."
        )
        parts.append(
            md_table(
                [
                    "contender",
                    "best validation (mean ± sd)",
                    "test score of the best model (mean ± sd)",
                    "best validation per seed " + "/".join(str(s) for s in result["seeds"]),
                    "trials per seed",
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
    synth = result.get("synthetic_20k", {})
    budgets = "; ".join(
        f"{task} {d['budget']} epochs = {d['budget'] // d['max_epochs']} trials of at most {d['max_epochs']} epochs"
        for task, d in result["tasks"].items()
    )
    runs = sum(len(c["seeds"]) for d in result["tasks"].values() for c in d["contenders"].values())
    test = f"{result.get('test_fraction', 0.2):.0%}"
    return (
        f"Five tasks. Before any search, {test} of each task's rows are held out as its **test set** (split seed "
        f"{result.get('test_seed')}, stratified by class) and never seen by a search; the rest is uploaded to the "
        "service as an .npz and split by the service (validation fraction 0.2, seed 0), the split every contender "
        "trains and validates on, with inputs standardised as the service does. Tasks: `digits` (multiclass, "
        "288 validation rows: one sample is 0.0035 of accuracy; 360 test rows), `breast_cancer` (binary, 91 "
        "validation rows: 0.011; 114 test rows), `wine` (3 classes, 29 validation rows: 0.034; 36 test rows), "
        "`diabetes` (regression, `val_mae`, minimised; 71 validation rows, 89 test rows) and `synthetic_20k`, "
        f"scikit-learn's `make_classification` generated in process ({synth.get('n_samples', 0):,} rows, "
        f"{synth.get('n_features')} features of which {synth.get('n_informative')} informative and "
        f"{synth.get('n_redundant')} redundant, {synth.get('n_classes')} classes of "
        f"{synth.get('n_clusters_per_class')} clusters, `flip_y={synth.get('flip_y')}`, `class_sep="
        f"{synth.get('class_sep')}`, `random_state={synth.get('random_state')}`: 12,800 training, 3,200 "
        "validation and 4,000 test rows). The classic space: `hidden_layers` int 0..8, `neurons` int 16..256 log, "
        "`learning_rate` float 1e-4..1e-2 log, `optimizer` sgd/adam (no momentum), `batch_size` 32/64/128. "
        "Every model is `tuner_service.hypermodel.build_model`, with `EarlyStopping(patience="
        f"{result['patience']}, restore_best_weights=True)` on the objective. "
        "**The budget counts every epoch trained**, in training order, including epochs of pruned, early-stopped "
        "and budget-stopped trials and of resumed Hyperband/ASHA rounds; a run is judged on its first *budget* "
        "epochs only (the in-process contenders stop training at the budget; the service loop stops claiming "
        "once the store counts it, and epochs of its last trial beyond it are ignored). **Best validation** = the "
        "best validation objective of any epoch within the budget, which is each tuner's own best trial score "
        "(Keras Tuner, Optuna and the service all score a trial by its best epoch; pruned trials count with their "
        "reported values). **Test score of the best model**: the trial that first reached the run's best "
        "validation score is scored once on the test rows (accuracy, resp. MAE), with the weights of its best "
        "epoch: for the service the `.keras` model it saved for that trial, for Keras Tuner `tuner.load_model` "
        "of that trial (its best-epoch checkpoint), for Optuna the weights kept in process at the end of that "
        "trial (restored to its best epoch by early stopping). **Epochs to X's best**: the first epoch of the run "
        "at which its best reached the best that Keras Tuner's RandomSearch (resp. Hyperband) reached with the "
        "same seed; – when it never did within the budget. Contenders: Keras Tuner `RandomSearch`, "
        "`BayesianOptimization` (defaults: 3 × 5 = 15 random initial trials) and `Hyperband` in one process (a "
        "`kt.HyperModel` around `build_model`, batch size passed to `fit`); Optuna `TPESampler(seed)` with "
        "`MedianPruner()` (defaults: 10 random start-up trials, pruning once 5 trials finished); the service's "
        "`random`, `bayesian` (a Gaussian process, GP-UCB), `tpe` (Optuna's multivariate TPE), `hyperband`, "
        "`asha` (sampler random) and `asha` with `sampler: tpe` (new configurations from the TPE model fitted on "
        "each configuration's result at its highest rung, after `initial_points` random ones: the service's "
        "default for a study whose `max_trials` is what the budget holds in ASHA's trials, a quarter of it), "
        "driven in process: `submit_study` on a SQLite store, then `claim_next` → "
        "`train_trial` → `finish_trial` until the store holds the budget's epochs (a worker minus the broker). "
        "`bayesian` and `tpe` get `initial_points` as the service's default would set it for a study whose "
        "`max_trials` is what the budget holds at full length (budget / max_epochs trials, a quarter of it, at "
        f"least 2). Seeds {', '.join(map(str, result['seeds']))} (the tuner's, the study's and Optuna's seed). "
        f"**The budgets are small**: {budgets}, so that {runs} runs fit in about an hour on 2 cores shared "
        "with other work (a run's cost is mostly per trial: building and tracing a model). "
        f"Runs are processes of one TensorFlow thread, {result['parallel']} at a time; wall times are per run "
        "and only indicative."
    )


# -- reading: the goal, then why ------------------------------------------------------------------------


def _at_least(a: float, b: float, direction: str) -> bool:
    return not _better(b, a, direction)


def _pick(cs: dict[str, Any], names: list[str], key: str, direction: str) -> str | None:
    present = [k for k in names if k in cs and cs[k].get(key) is not None]
    if not present:
        return None
    return sorted(present, key=lambda k: cs[k][key], reverse=direction == "max")[0]


def quality_goal(data: dict[str, Any], key: str = "mean") -> dict[str, Any]:
    """Which service algorithms are at least as good as every outside contender on the mean of ``key``."""
    cs, direction = data["contenders"], data["direction"]
    outside = [k for k in OUTSIDE if k in cs and cs[k].get(key) is not None]
    holds = {
        k: all(_at_least(cs[k][key], cs[o][key], direction) for o in outside)
        for k in SERVICE
        if k in cs and cs[k].get(key) is not None
    }
    top = _pick(cs, SERVICE, key, direction)
    return {
        "top": top,
        "outside": _pick(cs, OUTSIDE, key, direction),
        "holds": bool(top and holds.get(top)),
        "per_service": holds,
    }


def epochs_goal(data: dict[str, Any], contender: str) -> dict[str, Any]:
    """Per seed: the epochs ``contender`` took to reach RandomSearch's final best, against the epochs RandomSearch
    took itself (half of them or fewer meets the goal) and against half the budget."""
    cs = data["contenders"]
    if contender not in cs or "kt_random" not in cs:
        return {}
    own = dict(zip(cs["kt_random"]["seeds"], cs["kt_random"]["to_kt_random"], strict=True))
    mine = dict(zip(cs[contender]["seeds"], cs[contender]["to_kt_random"], strict=True))
    ratios = []
    for seed, epochs in mine.items():
        rs = own.get(seed)
        ratios.append(None if epochs is None or not rs else epochs / rs)
    half_rs = sum(r is not None and r <= 0.5 for r in ratios)
    half_budget = sum(e is not None and 2 * e <= data["budget"] for e in mine.values())
    finite = sorted(float("inf") if r is None else r for r in ratios)
    median = statistics.median(finite) if finite else float("inf")
    return {"ratios": ratios, "half_rs": half_rs, "half_budget": half_budget, "median": median, "n": len(ratios)}


def _ratio(value: float) -> str:
    return "not reached" if value == float("inf") else f"{value:.2f}"


def _reading(result: dict[str, Any]) -> str:
    tasks = result["tasks"]
    blocks = [
        "**The goal, search quality**: the service's best algorithm at least as good as every outside contender "
        "(Keras Tuner's three, Optuna) on the mean over seeds."
    ]
    rows = []
    for task, data in tasks.items():
        obj, cs = data["objective"], data["contenders"]
        row = [task]
        for key, sd_key in (("mean", "sd"), ("test_mean", "test_sd")):
            g = quality_goal(data, key)
            if g["top"] is None or g["outside"] is None:
                row += ["–", "–", "–"]
                continue
            top, out = cs[g["top"]], cs[g["outside"]]
            row += [
                f"{LABELS[g['top']]} {_mean_sd(top[key], top[sd_key], obj)}",
                f"{LABELS[g['outside']]} {_mean_sd(out[key], out[sd_key], obj)}",
                "**yes**" if g["holds"] else "no",
            ]
        rows.append(row)
    blocks.append(
        md_table(
            [
                "task",
                "best service algorithm (validation)",
                "best outside contender (validation)",
                "goal met",
                "best service algorithm (test)",
                "best outside contender (test)",
                "goal met on test",
            ],
            rows,
        )
    )
    summary = []
    for key, what in (("mean", "best validation score"), ("test_mean", "test score")):
        goals = {task: quality_goal(data, key) for task, data in tasks.items()}
        met = [t for t, g in goals.items() if g["holds"]]
        per_algo = {k: [t for t, g in goals.items() if g["per_service"].get(k)] for k in SERVICE}
        single = max(per_algo, key=lambda k: len(per_algo[k]))
        wanted = len(goals) - 1
        verdict = "met" if len(met) >= wanted else "not met"
        summary.append(
            f"- On the **{what}**: the best service algorithm of each task meets the goal on **{len(met)} of "
            f"{len(goals)} tasks** ({', '.join(met) or 'none'}); the goal asks for {wanted}: **{verdict}**. "
            "One algorithm for every task: "
            + "; ".join(f"{_short(k)} {len(v)} ({', '.join(v) or 'none'})" for k, v in per_algo.items())
            + f" — the most by one algorithm is {len(per_algo[single])}."
        )
    blocks.append("\n".join(summary))
    blocks.append(
        "**The goal, epochs**: reach Keras Tuner RandomSearch's final best (same task, same seed) within half the "
        "epochs RandomSearch itself took to reach it. Per service algorithm and task: seeds where it did, out of "
        "the seeds, and the median over seeds of its epochs divided by RandomSearch's (*not reached* counts as "
        "infinite; the goal holds on a task when that median is at most 0.5, i.e. in most seeds); in brackets the "
        "seeds where it got there within half the budget."
    )
    rows, met = [], []
    for contender in SERVICE:
        row = [LABELS[contender]]
        for data in tasks.values():
            g = epochs_goal(data, contender)
            row.append(
                f"{g['half_rs']}/{g['n']}, median {_ratio(g['median'])} ({g['half_budget']}/{g['n']})" if g else "–"
            )
        rows.append(row)
    rs_row = ["KT RandomSearch reached its own best at epoch"]
    for task, data in tasks.items():
        rs = data["contenders"].get("kt_random")
        rs_row.append(_reach(rs["to_kt_random"]) + f" of {data['budget']}" if rs else "–")
        goals = {k: epochs_goal(data, k) for k in SERVICE if k in data["contenders"]}
        best = min(goals, key=lambda k: (goals[k]["median"], -goals[k]["half_rs"])) if goals else None
        if best and goals[best]["median"] <= 0.5:
            met.append(f"{task} ({_short(best)})")
    blocks.append(md_table(["", *tasks], [rs_row, *rows]))
    blocks.append(
        f"- The half-the-epochs goal holds for the best service algorithm of the task on **{len(met)} of "
        f"{len(tasks)} tasks**{': ' + ', '.join(met) if met else ''}."
    )
    blocks.append("**Ranked by mean best validation score (test score in brackets).**")
    blocks.append("\n".join(_task_reading(task, data) for task, data in tasks.items()))
    blocks.append("**Why, as far as these runs show.**")
    blocks.append("\n".join(_why(result)))
    return "**Reading.**\n\n" + "\n\n".join(blocks)


def _model_based_verdict(tasks: dict[str, Any], mostly_behind: bool) -> str:
    """What the runs say of `bayesian` and `tpe` at these budgets, from which service algorithm led each task."""
    tops = {task: quality_goal(data)["top"] for task, data in tasks.items()}
    led = [task for task, top in tops.items() if top in ("svc_bayesian", "svc_tpe")]
    others = sorted({_short(top) for task, top in tops.items() if top and task not in led})
    if mostly_behind:
        verdict = " At budgets this small, `random` or `asha` serve a study better"
    elif not led:
        verdict = (
            " They were not behind `random` on most tasks here, but the service's best mean on every task was "
            f"another algorithm's ({', '.join(others)})"
        )
    else:
        verdict = f" They led the service on {', '.join(led)}"
    return (
        verdict + "; more `initial_points` bring `bayesian` and `tpe` closer to random search, which is what they "
        "are until the model starts."
    )


def _short(contender: str) -> str:
    """A service contender named by its algorithm alone, as the reading's lists name them."""
    return LABELS[contender].removeprefix("service ")


def _spread(c: dict[str, Any]) -> float:
    return c["sd"] or 0.0


def _task_reading(task: str, data: dict[str, Any]) -> str:
    """Ranking by the mean, and which outside contenders beat the best service contender beyond the seed spread."""
    cs = {k: v for k, v in data["contenders"].items() if v["mean"] is not None}
    direction, obj = data["direction"], data["objective"]
    ranked = sorted(cs, key=lambda k: cs[k]["mean"], reverse=direction == "max")
    line = f"- **{task}**: " + ", ".join(
        f"{LABELS[k]} {_fmt(cs[k]['mean'], obj)} ({_fmt(cs[k].get('test_mean'), obj)})" for k in ranked
    )
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
        line += f". Ahead of the best service algorithm ({LABELS[top]}) by more than the seed-to-seed sd: " + ", ".join(
            LABELS[k] for k in clear
        )
    if close:
        line += f". Ahead of {LABELS[top]} on the mean but within the seed-to-seed sd: " + ", ".join(
            LABELS[k] for k in close
        )
    if not clear and not close:
        line += f". Nothing outside the service is ahead of {LABELS[top]} on the mean"
    return line + "."


def _same_runs(data: dict[str, Any], a: str, b: str) -> tuple[int, int] | None:
    """In how many seeds two contenders trained exactly the same curve within the budget."""
    cs = data["contenders"]
    if a not in cs or b not in cs:
        return None
    budget = data["budget"]
    pairs = list(zip(cs[a]["curves"], cs[b]["curves"], strict=False))
    return sum(x[:budget] == y[:budget] for x, y in pairs), len(pairs)


def _count(c: dict[str, Any], prefix: str) -> int:
    return sum(n for statuses in c["statuses"] for status, n in statuses.items() if status.lower().startswith(prefix))


def _rank(data: dict[str, Any], contender: str, key: str = "mean") -> str:
    """Competition rank (1 + how many are strictly better), marked when tied."""
    cs = {k: v for k, v in data["contenders"].items() if v.get(key) is not None}
    if contender not in cs:
        return "–"
    mine = cs[contender][key]
    ahead = sum(_better(c[key], mine, data["direction"]) for c in cs.values())
    tied = sum(_same(c[key], mine) for c in cs.values()) > 1
    return f"{ahead + 1}{' (tied)' if tied else ''} of {len(cs)}"


def _worst(data: dict[str, Any], contender: str) -> float | None:
    bests = [b for b in data["contenders"][contender]["best"] if b is not None]
    if not bests:
        return None
    return min(bests) if data["direction"] == "max" else max(bests)


def _median_epoch(data: dict[str, Any], contender: str) -> float | None:
    values = [v for curve in data["contenders"][contender]["curves"] for v in curve[: data["budget"]] if v is not None]
    return statistics.median(values) if values else None


def _signed(difference: float, data: dict[str, Any]) -> str:
    """A difference of the task's means, signed so that positive is better (a minimised objective's is negated)."""
    better = -difference if data["direction"] == "min" else difference
    return ("+" if better >= 0 else "−") + _fmt(abs(better), data["objective"])


def _span(values: list[int]) -> str:
    return f"{min(values)}–{max(values)}" if min(values) != max(values) else str(values[0])


def _why(result: dict[str, Any]) -> list[str]:
    tasks = result["tasks"]
    lines = []
    kt_same, kt_trials = [], []
    for task, data in tasks.items():
        same = _same_runs(data, "kt_random", "kt_bayesian")
        if same:
            kt_same.append(f"{task} {same[0]} of {same[1]}")
        if "kt_bayesian" in data["contenders"]:
            kt_trials.append(f"{task} {_span(data['contenders']['kt_bayesian']['trials'])}")
    if kt_same:
        lines.append(
            "- **Keras Tuner's BayesianOptimization is random search at these budgets.** With its defaults it draws "
            "15 random trials before its Gaussian process proposes anything, and its runs here held "
            f"{'; '.join(kt_trials)} trials; it trained exactly RandomSearch's curve (same seed) in "
            f"{'; '.join(kt_same)} seeds."
        )
    model_based = []
    for task, data in tasks.items():
        cs, obj = data["contenders"], data["objective"]
        names = [k for k in ("svc_bayesian", "svc_tpe", "svc_random") if k in cs and cs[k]["mean"] is not None]
        if len(names) == 3:
            model_based.append(
                f"{task} "
                + ", ".join(
                    f"`{k.removeprefix('svc_')}` {_fmt(cs[k]['mean'], obj)} (worst seed {_fmt(_worst(data, k), obj)}, "
                    f"median epoch {_fmt(_median_epoch(data, k), obj)})"
                    for k in names
                )
            )
    if model_based:
        points = ", ".join(
            f"{t} {d.get('initial_points', '–')} of {_span(d['contenders']['svc_bayesian']['trials'])}"
            for t, d in tasks.items()
            if "svc_bayesian" in d["contenders"]
        )
        initial = " or ".join(sorted({str(d.get("initial_points")) for d in tasks.values()}))
        behind = {
            k: [
                t
                for t, d in tasks.items()
                if k in d["contenders"]
                and "svc_random" in d["contenders"]
                and None not in (d["contenders"][k]["mean"], d["contenders"]["svc_random"]["mean"])
                and _better(d["contenders"]["svc_random"]["mean"], d["contenders"][k]["mean"], d["direction"])
            ]
            for k in ("svc_bayesian", "svc_tpe")
        }
        concentrated = [
            t
            for t, d in tasks.items()
            if all(k in d["contenders"] for k in ("svc_bayesian", "svc_tpe", "svc_random"))
            and all(
                _better(_median_epoch(d, k), _median_epoch(d, "svc_random"), d["direction"])
                and _better(d["contenders"]["svc_random"]["mean"], d["contenders"][k]["mean"], d["direction"])
                for k in ("svc_bayesian", "svc_tpe")
            )
        ]
        mostly = all(2 * len(v) > len(tasks) for v in behind.values())
        steer = ", and here it mostly steered them away from what random draws found" if mostly else ""
        lines.append(
            "- **The service's `bayesian` and `tpe` switch to their model after a few initial trials** (a Latin "
            "hypercube: one trial in each slice of every parameter's range), as many as "
            "the service's default gives a study sized to these budgets (initial trials, and trials `bayesian` ran "
            f"per seed: {points}); every later trial is proposed by the Gaussian process (resp. TPE), fitted first "
            f"on the initial trials' results alone. Their mean best fell behind the service's `random` on "
            f"{len(behind['svc_bayesian'])} (`bayesian`) and {len(behind['svc_tpe'])} (`tpe`) of {len(tasks)} "
            f"tasks: a model fitted on {initial} results steers the few trials such a budget holds{steer}. Mean "
            "best validation score, worst seed, and "
            "the median objective over every epoch the runs trained: "
            + "; ".join(model_based)
            + "."
            + (
                f" On {', '.join(concentrated)} both trained better epochs than `random` on the median yet found a "
                "worse best: the model kept proposing near its first results instead of exploring."
                if concentrated
                else ""
            )
            + _model_based_verdict(tasks, mostly)
        )
    gaps = []
    for task, data in tasks.items():
        cs, obj = data["contenders"], data["objective"]
        pairs = [("kt_random", "svc_random", "random search"), ("kt_hyperband", "svc_hyperband", "Hyperband")]
        said = [
            f"{what} {_fmt(cs[a]['mean'], obj)} against {_fmt(cs[b]['mean'], obj)} (sd {_fmt(cs[a]['sd'], obj)} and "
            f"{_fmt(cs[b]['sd'], obj)}, worst seed {_fmt(_worst(data, a), obj)} and {_fmt(_worst(data, b), obj)})"
            for a, b, what in pairs
            if a in cs and b in cs and None not in (cs[a]["mean"], cs[b]["mean"], cs[a]["sd"], cs[b]["sd"])
        ]
        if said:
            gaps.append(f"{task}: " + ", ".join(said))
    if gaps:
        lines.append(
            "- **The noise floor.** The service's `random` and Keras Tuner's RandomSearch are one algorithm with "
            "different draws: the service draws each trial's configuration from a stream of its own, derived from "
            "the study's seed and the trial number; Keras Tuner draws from one stream per tuner. So are the "
            "service's `hyperband` and Keras Tuner's Hyperband for their new configurations. Their means, Keras "
            "Tuner's first, differ by what the luck of five seeds' draws moves a mean: " + "; ".join(gaps) + ". "
            "With five to eight trials a run, one seed whose draws all land in a poor region (plain SGD at a small "
            "learning rate, which learns little in six epochs) sinks its run and the mean with it. Differences "
            "between contenders' means of that size say little about the algorithms."
        )
    optimistic, pessimistic = [], []
    for task, data in tasks.items():
        diffs = [
            (c["mean"] - c["test_mean"]) * (1 if data["direction"] == "max" else -1)
            for c in data["contenders"].values()
            if c["mean"] is not None and c.get("test_mean") is not None
        ]
        if diffs:
            mean = statistics.fmean(diffs)
            (optimistic if mean > 0 else pessimistic).append(f"{task} by {_fmt(abs(mean), data['objective'])}")
    if optimistic or pessimistic:
        text = (
            "- **Validation best against test.** The best validation score is the best over every epoch of every "
            "trial on the same validation rows, so it is biased upwards, and the test score of that model is the "
            "fair number. Averaged over the contenders, the test score was worse than the best validation score on "
            + (", ".join(optimistic) or "no task")
        )
        if pessimistic:
            text += (
                " and better on " + ", ".join(pessimistic) + " (the validation and test rows are two fixed samples of "
                "the task, and there the test rows were the easier ones)"
            )
        lines.append(
            text + ". The rankings by the two differ, as the tables show; differences within the seed-to-seed sd "
            "are not a ranking in either."
        )
    asha = []
    for task, data in tasks.items():
        cs = data["contenders"]
        if "svc_asha" in cs and "svc_random" in cs:
            asha.append(
                f"{task} {_span(cs['svc_asha']['trials'])} trials against {_span(cs['svc_random']['trials'])} for "
                f"`random`, rank {_rank(data, 'svc_asha')} on validation and {_rank(data, 'svc_asha', 'test_mean')} "
                "on test"
            )
    if asha:
        lines.append(
            "- **ASHA** tries many more configurations for the same epochs (most of them stopped after the first "
            "rung's epoch) and promotes the top third rung by rung: " + "; ".join(asha) + ". That is a bet that "
            "one epoch ranks configurations the way the full training does; the ranks above say where it paid."
        )
    sampled = []
    for task, data in tasks.items():
        cs = data["contenders"]
        if "svc_asha_tpe" in cs and "svc_asha" in cs:
            from bench.quality_runs import asha_initial_points

            first = asha_initial_points(
                data["budget"], result["asha"]["min_epochs"], data["max_epochs"], result["asha"]["reduction_factor"]
            )
            gap = cs["svc_asha_tpe"]["mean"] - cs["svc_asha"]["mean"]
            test_gap = cs["svc_asha_tpe"]["test_mean"] - cs["svc_asha"]["test_mean"]
            sampled.append(
                f"{task} {_span(cs['svc_asha_tpe']['trials'])} trials, the first {first} configurations random, "
                f"{_signed(gap, data)} on validation and {_signed(test_gap, data)} on test against random draws "
                f"(rank {_rank(data, 'svc_asha_tpe')} and {_rank(data, 'svc_asha_tpe', 'test_mean')})"
            )
    if sampled:
        lines.append(
            "- **ASHA with the `tpe` sampler** runs the same rungs and promotions as `asha`; only its new "
            "configurations differ: after its random ones, each comes from Optuna's TPE fitted on every "
            "configuration's result at its highest rung. Against `asha` with random draws (the difference of "
            "the means over the seeds, signed so that positive is better): " + "; ".join(sampled) + ". Unlike "
            "`bayesian` and `tpe` alone, its model sees twenty-odd results per run (one-epoch ones mostly) rather "
            "than the two initial trials of a budget that holds five or seven full trials."
        )
    optuna = []
    for task, data in tasks.items():
        c = data["contenders"].get("optuna_tpe")
        if c:
            optuna.append(
                f"{task} {_span(c['trials'])} trials ({_count(c, 'pruned')} pruned over the seeds), rank "
                f"{_rank(data, 'optuna_tpe')} on validation and {_rank(data, 'optuna_tpe', 'test_mean')} on test"
            )
    if optuna:
        lines.append("- **Optuna TPE + MedianPruner**: " + "; ".join(optuna) + ".")
    failed = []
    for task, data in tasks.items():
        for k, c in data["contenders"].items():
            n = _count(c, "fail")
            if n:
                failed.append(f"{task} {LABELS[k]} {n}")
    if failed:
        lines.append(
            "- **Failed trials** (a non-finite objective: the configuration diverged), summed over the seeds: "
            + "; ".join(failed)
            + "."
        )
    lines.extend(_wins(result))
    checks = _checks(result)
    if checks:
        lines.append(checks)
    return lines


# Random draws before the outside model-based contenders model anything (their defaults here).
RANDOM_START = {"kt_bayesian": 15, "optuna_tpe": 10}


def _wins(result: dict[str, Any]) -> list[str]:
    """Where an outside contender's mean beats the best service algorithm's, and what its runs were."""
    lines = []
    for key, sd_key, what in (("mean", "sd", "best validation"), ("test_mean", "test_sd", "test score")):
        for task, data in result["tasks"].items():
            goal = quality_goal(data, key)
            if goal["holds"] or goal["top"] is None:
                continue
            cs, obj, direction = data["contenders"], data["objective"], data["direction"]
            top = cs[goal["top"]]
            ahead = [
                k
                for k in OUTSIDE
                if k in cs and cs[k].get(key) is not None and _better(cs[k][key], top[key], direction)
            ]
            parts = []
            for k in ahead:
                c = cs[k]
                gap = abs(c[key] - top[key])
                spread = max(c[sd_key] or 0.0, top[sd_key] or 0.0)
                side = "more" if gap > spread else "less"
                text = f"{LABELS[k]} by {_fmt(gap, obj)} ({side} than the larger sd, {_fmt(spread, obj)})"
                start = RANDOM_START.get(k)
                if start is not None and max(c["trials"]) <= start:
                    text += (
                        f": its runs held {_span(c['trials'])} trials, all within its {start} random start-up draws, "
                        "so it was random search with other draws"
                    )
                elif k == "kt_hyperband" and "svc_hyperband" in cs:
                    mine = cs["svc_hyperband"]
                    text += (
                        ": the algorithm of the service's `hyperband` with other draws (the service's: "
                        f"{_fmt(mine[key], obj)} ± {_fmt(mine[sd_key], obj)})"
                    )
                if k == "optuna_tpe":
                    pruned = _count(c, "pruned")
                    text += f"; its pruner stopped {pruned} trial{'s' if pruned != 1 else ''} over the seeds"
                parts.append(text)
            lines.append(
                f"- **Where the goal fails, {task} ({what})**: ahead of the best service algorithm "
                f"({LABELS[goal['top']]}, {_fmt(top[key], obj)}): " + "; ".join(parts) + "."
            )
    return lines


def _checks(result: dict[str, Any]) -> str:
    """How well each scored model reproduces its run's best validation score (it must: it is that model)."""
    worst, runs, beyond = 0.0, 0, 0
    for data in result["tasks"].values():
        for c in data["contenders"].values():
            for best, again, late in zip(
                c["best"], c.get("val_again", []), c.get("model_beyond_budget", []), strict=False
            ):
                if late:
                    beyond += 1
                    continue
                if best is None or again is None:
                    continue
                runs += 1
                scale = 1.0 if data["objective"] != "val_mae" else max(abs(best), 1e-9)
                worst = max(worst, abs(best - again) / scale)
    if not runs:
        return ""
    within = "exactly" if worst == 0 else f"within {worst:.1e}{' (relative for MAE)' if worst else ''}"
    text = (
        f"- **Check**: in {runs} runs the scored model, evaluated again on the validation rows, gave back the "
        f"run's best validation score {within}"
    )
    if beyond:
        text += (
            f"; in {beyond} service run{'s' if beyond > 1 else ''} the trial that held the best epoch within the "
            "budget was the one that crossed it, and the model it saved is from a later, better epoch (its test "
            "score is counted as is)"
        )
    return text + "."


if __name__ == "__main__":
    # python -m bench.search_quality svc_bayesian svc_tpe: run those contenders again into the stored result.
    from bench.__main__ import machine_info, paths, render

    results_dir, markdown_path = paths(False)
    result_path = results_dir / f"{NAME}.json"
    stored = json.loads(result_path.read_text())
    stored["result"] = rerun(stored["result"], sys.argv[1:])
    result_path.write_text(json.dumps(stored, indent=2, default=str) + "\n")
    command = f"python -m bench.search_quality {' '.join(sys.argv[1:])}"
    markdown_path.write_text(render(results_dir, machine_info(), command))
