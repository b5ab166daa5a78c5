"""Leaderboard queries at scale: a million finished trials over a thousand studies in PostgreSQL.

The trials are bulk-inserted through the store's own models (``bench/synthetic.py``), the tables vacuumed
and analysed, and then each query the API and the dashboard run is timed through ``Store.leaderboard`` /
``Store.list_trials`` / ``Store.trial_counts`` (each call is its ``count(*)`` for the page total plus the page
itself), with ``EXPLAIN (ANALYZE, BUFFERS)`` of both statements as the store sends them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from bench.common import fmt_s, fmt_x, md_table, percentile, ratio, temporary_postgres

NAME = "leaderboard_scale"
TITLE = "Leaderboard queries on a million trials (PostgreSQL)"
PLAN_LINES = 6


def _capture(store: Any, fn: Callable[[], Any]) -> list[tuple[str, Any]]:
    """The SQL statements (with parameters) one store call sends."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def listener(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", listener)
    try:
        fn()
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)
    return seen


def _explain(store: Any, statement: str, parameters: Any) -> list[str]:
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
    return [r[0] for r in rows]


INDEX_NODE = re.compile(r"(?:Index(?: Only)? Scan(?: Backward)? using|Bitmap Index Scan on) (\S+)")


def _plan_summary(plan: list[str]) -> dict[str, Any]:
    execution = next((line for line in plan if line.startswith("Execution Time")), "")
    return {
        "indexes": sorted({m.group(1) for line in plan for m in INDEX_NODE.finditer(line)}),
        "seq_scan_trials": any("Seq Scan on trials" in line for line in plan),
        "sorts": any(SCORE_SORT.search(line) for line in plan),
        "sorted_rows": _sorted_rows(plan),
        "execution_ms": float(execution.split(":")[1].split()[0]) if execution else None,
    }


SCORE_SORT = re.compile(r"Sort Key: (?:trials\.)?sort_key")


def _sorted_rows(plan: list[str]) -> int | None:
    """Rows fed into the plan's sort on the score (all workers), if it has one."""
    for i, line in enumerate(plan):
        if SCORE_SORT.search(line):
            for below in plan[i + 1 :]:
                m = re.search(r"actual time=[\d.]+\.\.[\d.]+ rows=(\d+) loops=(\d+)", below)
                if m and "->" in below:
                    return int(m.group(1)) * int(m.group(2))
    return None


def _excerpt(plan: list[str]) -> list[str]:
    """The plan's top lines, then every scan node below them (which index or table each step reads)."""
    top = plan[:PLAN_LINES]
    scans = [line for line in plan[PLAN_LINES:] if "Scan" in line and "->" in line]
    return top + (["  ..."] if scans else []) + scans


def _time(fn: Callable[[], Any], reps: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _queries(store: Any, data: Any) -> list[tuple[str, str, Callable[[], Any]]]:
    """(key, what it is and who sends it, the call) for every query measured."""
    from tuner_service.dashboard.study_pages import MAX_TRIALS_SHOWN

    big = max(data.studies, key=lambda s: s["trials"])
    ranked_big = store.leaderboard(study_id=big["id"], limit=1).total
    # the data set + objective with the most trials, and a team that has some of them
    key = max(data.per_dataset_objective, key=data.per_dataset_objective.get)
    dataset, objective = key.split("/")
    dataset_id = data.dataset_ids[dataset]
    task = next(s["task_type"] for s in data.studies if s["dataset"] == dataset)
    team = next(s["team_id"] for s in data.studies if s["dataset"] == dataset and s["objective"] == objective)
    deep_ds = min(50_000, max(0, data.per_dataset_objective[key] // 2))
    regression_metric = "val_mae"
    sid = big["id"]
    return [
        (
            "study_first",
            f"one study's leaderboard, first page of 20 (`GET /studies/{{id}}/leaderboard`; study of {big['trials']:,} "
            "trials, the largest)",
            lambda: store.leaderboard(study_id=sid, limit=20),
        ),
        (
            "study_deep",
            f"the same, last page (offset {max(0, ranked_big - 20):,})",
            lambda: store.leaderboard(study_id=sid, limit=20, offset=max(0, ranked_big - 20)),
        ),
        (
            "trials_first",
            "one study's trials by score, first page of 50 (`GET /studies/{id}/trials`)",
            lambda: store.list_trials(sid, sort="score", limit=50),
        ),
        (
            "trials_deep",
            f"the same, last page (offset {max(0, big['trials'] - 50):,})",
            lambda: store.list_trials(sid, sort="score", limit=50, offset=max(0, big["trials"] - 50)),
        ),
        (
            "study_progress",
            "a study's progress: `trial_counts` + `mean_trial_duration` (for the ETA), run by every "
            "`GET /studies/{id}` and for every study in `GET /studies`",
            lambda: (store.trial_counts(sid), store.mean_trial_duration(sid)),
        ),
        (
            "dashboard_study",
            f"the dashboard's study page: trials by number, limit {MAX_TRIALS_SHOWN}",
            lambda: store.list_trials(sid, sort="number", limit=MAX_TRIALS_SHOWN),
        ),
        (
            "dataset_metric",
            f"across studies: data set `{dataset}` + metric `{objective}`, first page (admin "
            "`GET /leaderboard?dataset=…&metric=…`)",
            lambda: store.leaderboard(dataset_id=dataset_id, objective_name=objective, limit=20),
        ),
        (
            "dataset_metric_deep",
            f"the same, offset {deep_ds:,}",
            lambda: store.leaderboard(dataset_id=dataset_id, objective_name=objective, limit=20, offset=deep_ds),
        ),
        (
            "dataset_metric_team",
            "the same as a team member sends it (the API adds the caller's team), first page",
            lambda: store.leaderboard(dataset_id=dataset_id, objective_name=objective, team_id=team, limit=20),
        ),
        (
            "filtered_paged",
            f"data set + metric + task `{task}` + team, page 51 (offset 1,000)",
            lambda: store.leaderboard(
                dataset_id=dataset_id, objective_name=objective, task_type=task, team_id=team, limit=20, offset=1000
            ),
        ),
        (
            "metric_only",
            f"metric `{regression_metric}` across every data set, first page (`GET /leaderboard?metric=…`)",
            lambda: store.leaderboard(objective_name=regression_metric, limit=20),
        ),
        (
            "task_only",
            "task `regression` only, first page (`GET /leaderboard?task=regression`)",
            lambda: store.leaderboard(task_type="regression", limit=20),
        ),
        (
            "team_only",
            "a team member's `GET /leaderboard` with no filter (their team's trials), first page",
            lambda: store.leaderboard(team_id=team, limit=20),
        ),
    ]


RANKED = "WHERE status IN ('completed', 'pruned') AND sort_key IS NOT NULL"
# Indexes tried in a second pass (not in the schema): partial indexes over the ranked trials only, so that one
# range of each gives the rows already in leaderboard order, and one for a study's trials sorted by score.
CANDIDATES = {
    "cand_study_ranked": f"CREATE INDEX cand_study_ranked ON trials (study_id, sort_key, id) {RANKED}",
    "cand_dataset_ranked": f"CREATE INDEX cand_dataset_ranked ON trials (dataset_id, objective_name, sort_key, id) "
    f"{RANKED}",
    "cand_objective_ranked": f"CREATE INDEX cand_objective_ranked ON trials (objective_name, sort_key, id) {RANKED}",
    "cand_team_ranked": f"CREATE INDEX cand_team_ranked ON trials (team_id, sort_key, id) {RANKED}",
    "cand_study_score": "CREATE INDEX cand_study_score ON trials (study_id, sort_key, number)",
}


def _shape(definition: str) -> tuple[str, bool]:
    """(column list, partial?) of a CREATE INDEX statement, to compare a candidate with the schema's indexes."""
    columns = re.search(r"\(([^()]*)\)", definition.split(" ON ", 1)[1])
    return (" ".join(columns.group(1).split()) if columns else "", " WHERE " in definition)


def _existing(ddl: str, indexes: list[tuple[str, str, int]]) -> str | None:
    """The schema's index with the candidate's columns and partiality, if there is one."""
    return next((name for name, definition, _ in indexes if _shape(definition) == _shape(ddl)), None)


def _measure(store: Any, key: str, label: str, fn: Callable[[], Any], reps: int) -> dict[str, Any]:
    statements = _capture(store, fn)
    plans = [_explain(store, sql, params) for sql, params in statements]
    first = time.perf_counter()
    fn()
    one = time.perf_counter() - first
    n = reps if one < 2.0 else max(10, reps // 5)  # bounded: a pathological query is flagged, not looped
    times = _time(fn, n)
    return {
        "key": key,
        "label": label,
        "reps": n,
        "p50_s": percentile(times, 50),
        "p95_s": percentile(times, 95),
        "max_s": max(times),
        "statements": [
            {"sql": sql, "plan": plan, **_plan_summary(plan)}
            for (sql, _params), plan in zip(statements, plans, strict=True)
        ],
    }


def _maintenance(store: Any, *statements: str) -> float:
    from sqlalchemy import text

    start = time.perf_counter()
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            conn.execute(text(statement))
    return time.perf_counter() - start


def run(quick: bool) -> dict[str, Any]:
    from sqlalchemy import text

    from bench.synthetic import populate
    from tuner_service.store import Store

    trials, studies = (20_000, 50) if quick else (1_000_000, 1000)
    reps = 5 if quick else 50
    with temporary_postgres() as url:
        store = Store(url)
        try:
            store.upgrade()
            print(f"[bench]   inserting {trials:,} trials over {studies:,} studies", flush=True)
            data = populate(store, trials=trials, studies=studies, batch=20_000, progress=not quick)
            vacuum_s = _maintenance(store, "VACUUM (ANALYZE) trials", "VACUUM (ANALYZE) studies")
            with store.engine.connect() as conn:
                size = conn.execute(text("SELECT pg_total_relation_size('trials'), pg_relation_size('trials')")).one()
                indexes = [
                    (r[0], r[1], r[2])
                    for r in conn.execute(
                        text(
                            "SELECT indexname, indexdef, pg_relation_size(indexname::regclass) FROM pg_indexes "
                            "WHERE tablename = 'trials' ORDER BY indexname"
                        )
                    )
                ]
                version = conn.execute(text("SHOW server_version")).scalar()
            queries = _queries(store, data)
            results = []
            for key, label, fn in queries:
                print(f"[bench]   {key}", flush=True)
                results.append(_measure(store, key, label, fn, reps))
            missing = {name: ddl for name, ddl in CANDIDATES.items() if _existing(ddl, indexes) is None}
            present = {name: _existing(ddl, indexes) for name, ddl in CANDIDATES.items() if name not in missing}
            candidate_s, candidate_bytes, candidates = 0.0, {}, []
            if missing:
                print("[bench]   the same with the candidate indexes", flush=True)
                candidate_s = _maintenance(store, *missing.values(), "ANALYZE trials")
                with store.engine.connect() as conn:
                    candidate_bytes = {
                        name: conn.execute(text(f"SELECT pg_relation_size('{name}')")).scalar() for name in missing
                    }
                candidates = [_measure(store, key, label, fn, max(5, reps // 2)) for key, label, fn in queries]
        finally:
            store.dispose()
    return {
        "trials": data.trials,
        "studies": len(data.studies),
        "teams": len(data.team_ids),
        "datasets": len(data.dataset_ids),
        "largest_study": max(s["trials"] for s in data.studies),
        "median_study": sorted(s["trials"] for s in data.studies)[len(data.studies) // 2],
        "per_dataset_objective": data.per_dataset_objective,
        "batch": 20_000,
        "batches": data.batches,
        "insert_s": data.insert_s,
        "generate_s": data.generate_s,
        "insert_rate": data.trials / data.insert_s if data.insert_s else None,
        "vacuum_analyze_s": vacuum_s,
        "table_bytes": size[1],
        "total_bytes": size[0],
        "indexes": indexes,
        "postgres": version,
        "queries": results,
        "candidates": {
            "ddl": missing,
            "already_in_schema": present,
            "build_s": candidate_s,
            "bytes": candidate_bytes,
            "queries": candidates,
        },
    }


# -- report -------------------------------------------------------------------------------------------------


def _kind(sql: str) -> str:
    """What a captured statement is: the page total, a per-status count, or the page itself."""
    head = " ".join(sql.split())[:60].lower()
    if head.startswith("select count(*)"):
        return "page total (`count(*)`)"
    if "count(*)" in head:
        return "counts per status"
    if head.startswith("select avg("):
        return "mean duration"
    return "page"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def markdown(result: dict[str, Any]) -> str:
    setup = (
        f"{result['trials']:,} finished trials over {result['studies']:,} studies ({result['teams']} teams, "
        f"{result['datasets']} built-in data sets, two objectives per task type: val_accuracy/val_loss, "
        "val_accuracy/val_auc, val_mae/val_loss), 85 % completed, 10 % pruned (ranked), 5 % failed (no score); "
        f"study sizes spread log-normally (median {result['median_study']:,}, largest {result['largest_study']:,}). "
        f"PostgreSQL {result['postgres']} on this machine, a fresh database, schema by the store's own migrations. "
        f"Rows inserted with `session.execute(insert(TrialRow), rows)` in {result['batches']} batches of "
        f"{result['batch']:,}, one transaction each; then `VACUUM (ANALYZE)` of `trials` and `studies` "
        f"({result['vacuum_analyze_s']:.1f} s; it also sets the visibility map, which a bulk load would otherwise "
        "leave to autovacuum in the middle of the measurement). Each query is a call of the store's own method, "
        "timed end to end in this process (its `count(*)` for the page total, the page, building the records) "
        "after 3 warm-up calls."
    )
    insert = (
        f"**Insert rate: {result['insert_rate']:,.0f} trials/s** ({result['insert_s']:.1f} s in `execute` + commit "
        f"for {result['trials']:,} rows, maintaining the table's {len(result['indexes'])} B-tree indexes listed "
        f"below; building the row dicts took another {result['generate_s']:.1f} s). Table "
        f"{_mib(result['table_bytes'])}, with indexes and TOAST {_mib(result['total_bytes'])}."
    )
    index_rows = [[f"`{name}`", f"`{definition.split(' USING ')[1]}`", _mib(size)] for name, definition, size in
                  result["indexes"]]  # fmt: skip
    cands = {q["key"]: q for q in result.get("candidates", {}).get("queries", [])}
    rows = []
    for q in result["queries"]:
        row = [
            f"`{q['key']}`: {q['label']}",
            f"**{fmt_s(q['p50_s'])}**",
            f"{fmt_s(q['p95_s'])}",
            str(q["reps"]),
            _db_split(q),
            _used(q),
        ]
        if cands:
            c = cands.get(q["key"])
            row.append(f"**{fmt_s(c['p50_s'])}** ({fmt_x(ratio(c['p50_s'], q['p50_s']))}); {_used(c)}" if c else "–")
        rows.append(row)
    headers = ["query (store call; API or page that sends it)", "p50", "p95", "calls",
               "database time per statement (EXPLAIN ANALYZE)", "indexes used; what the score sort reads"]  # fmt: skip
    if cands:
        headers.append("p50 with the candidate indexes; indexes used")
    table = md_table(headers, rows)
    plans = []
    for q in result["queries"]:
        parts = [f"`{q['key']}`:"]
        for s in q["statements"]:
            top = "\n".join(_excerpt(s["plan"]))
            parts.append(f"{_kind(s['sql'])}:\n\n```\n{top}\n```")
        plans.append("\n\n".join(parts))
    return "\n\n".join(
        [
            setup,
            insert,
            "Indexes on `trials` (from the migrations):\n\n" + md_table(["index", "definition", "size"], index_rows),
            table,
            _reading(result),
            "<details><summary>Top lines of each plan (`EXPLAIN (ANALYZE, BUFFERS)`, the statements exactly as "
            "the store sent them)</summary>\n\n" + "\n\n".join(plans) + "\n\n</details>",
        ]
    )


def _db_split(q: dict[str, Any]) -> str:
    return " + ".join(f"{s['execution_ms']:.1f}" if s["execution_ms"] is not None else "?" for s in q["statements"]) + (
        " ms"
    )


def _used(q: dict[str, Any]) -> str:
    used = sorted({i for s in q["statements"] for i in s["indexes"]})
    text = ", ".join(f"`{i}`" for i in used) or "no index"
    if any(s["seq_scan_trials"] for s in q["statements"]):
        text += "; **seq scan of trials**"
    sorted_rows = [s["sorted_rows"] for s in q["statements"] if s.get("sorted_rows")]
    if sorted_rows:
        text += f"; sorts {max(sorted_rows):,} rows"
    return text


def _reading(result: dict[str, Any]) -> str:
    queries = {q["key"]: q for q in result["queries"]}
    cands = {q["key"]: q for q in result.get("candidates", {}).get("queries", [])}
    fast = [k for k, q in queries.items() if q["p50_s"] < 0.05]
    slow = sorted((k for k, q in queries.items() if q["p50_s"] >= 0.05), key=lambda k: -queries[k]["p50_s"])
    sorting = [k for k, q in queries.items() if any((s.get("sorted_rows") or 0) > 2000 for s in q["statements"])]
    lines = [f"- Under 50 ms at p50: {', '.join(f'`{k}`' for k in fast) or 'none'}."]
    for key in slow:
        q = queries[key]
        why = []
        totals = [s for s in q["statements"] if _kind(s["sql"]).startswith("page total")]
        db = sum(s["execution_ms"] or 0 for s in q["statements"])
        if totals and db:
            share = 100 * (totals[0]["execution_ms"] or 0) / db
            why.append(f"the page total's `count(*)` is {share:.0f} % of the database time")
        if any(s["seq_scan_trials"] for s in totals):
            why.append("that `count(*)` reads the whole `trials` table (the planner prefers a sequential scan to "
                       "visiting every matching index entry)")  # fmt: skip
        if any(s["seq_scan_trials"] for s in q["statements"] if s not in totals):
            why.append("the page itself scans the whole `trials` table (no trial index serves its filter)")
        line = f"- **Slow: `{key}`** (p50 {fmt_s(q['p50_s'])}, p95 {fmt_s(q['p95_s'])})"
        lines.append(line + (": " + "; ".join(why) if why else "") + ".")
    spiky = [k for k, q in queries.items() if q["p50_s"] < 0.05 <= q["p95_s"]]
    for key in spiky:
        q = queries[key]
        db = sum(s["execution_ms"] or 0 for s in q["statements"]) / 1000
        lines.append(
            f"- `{key}`: p50 {fmt_s(q['p50_s'])} but p95 {fmt_s(q['p95_s'])}, while the database needs "
            f"{fmt_s(db)}: the rest is this process building up to 1,000 records, and its spread (allocation, "
            "garbage collection) is in Python, not in PostgreSQL."
        )
    ranked_indexes = any(" WHERE " in definition and "sort_key" in definition for _, definition, _ in result["indexes"])
    if sorting and not ranked_indexes:
        lines.append(
            f"- **Every leaderboard page sorts its whole scope** ({', '.join(f'`{k}`' for k in sorting)}): the "
            "leaderboard indexes are `(…, status, sort_key)`, and `Store.leaderboard` filters "
            "`status IN ('completed', 'pruned')`, two ranges of the `status` column, so no single index range comes "
            "out in `sort_key` order; PostgreSQL reads every ranked trial of the study, data set or team and "
            "top-N-sorts them for each page (\"sorts … rows\" in the table). `list_trials(sort='score')` does "
            "the same through `uq_trials_study_number`. The page total, a `count(*)` over the same scope, costs "
            "the same again. Both grow with the scope, not with the page."
        )
    elif ranked_indexes:
        lines.append(
            "- **First pages read only their page.** The schema's partial indexes over ranked trials "
            "(`… (scope, sort_key, id) WHERE status IN ('completed', 'pruned') AND sort_key IS NOT NULL`) hand out "
            "rows already in leaderboard order, so a first page costs about 0.1 ms in the database whatever the "
            "scope. "
            + (
                f'Still sorting their whole scope: {", ".join(f"`{k}`" for k in sorting)} ("sorts … rows"): a deep '
                "page's `OFFSET` walks as many rows as it skips, so the planner sorts instead, and a task filter "
                "(`task_type` lives on `studies` only) cannot use any trial index. "
                if sorting
                else ""
            )
            + "What grows with the scope now is the page total: its `count(*)` counts every ranked trial of the "
            "study, data set, metric or team on every page (first entry of the database-time column)."
        )
    if cands:
        better = [k for k in queries if k in cands and cands[k]["p50_s"] < 0.7 * queries[k]["p50_s"]]
        ddl = "; ".join(f"`{v.split(' ON ', 1)[1]}`" for v in result["candidates"]["ddl"].values())
        lines.append(
            "- **Candidate indexes** (tried in a second pass on the same data; built in "
            f"{result['candidates']['build_s']:.1f} s, "
            f"{sum(result['candidates']['bytes'].values()) / 2**20:,.0f} MiB together): {ddl}. They cut the p50 by "
            f"more than 30 % for {', '.join(f'`{k}`' for k in better) or 'no query'} (last column)."
        )
    present = result.get("candidates", {}).get("already_in_schema") or {}
    if present:
        lines.append(
            "- The candidate indexes an earlier run of this benchmark proposed are in the schema now: "
            + ", ".join(f"`{name}`" for name in present.values())
            + " (so no second pass)."
        )
    if not any("task_type" in definition for _, definition, _ in result["indexes"]):
        lines.append(
            "- **Still to do**: `GET /leaderboard?task=…` filters on `studies.task_type`, so it joins and sorts every "
            "ranked trial; copying `task_type` onto `trials` (as `dataset_id` and `objective_name` already are) with a "
            "ranked index `(task_type, sort_key, id) WHERE …` would serve it. And the page total stays linear in the "
            'scope: an estimate, or counting at most a few thousand rows ("1,000+"), would bound it.'
        )
    return "**Reading.**\n\n" + "\n".join(lines)
