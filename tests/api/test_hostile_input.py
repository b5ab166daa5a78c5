"""Hostile input that used to answer 500: each class gets a 4xx problem+json naming the field, and nothing
is stored. The classes whose failure depended on the database (integer range, NUL, lone surrogates) run
on PostgreSQL too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from tests.api.conftest import authorized
from tests.conftest import digits_study, make_token
from tuner_service.api import create_app
from tuner_service.config import Settings
from tuner_service.errors import InvalidInput
from tuner_service.store import Store
from tuner_service.study import submit_study

BIG = str(2**70)
PG_INT_OVERFLOW = str(2**31)  # in range for SQLite, one past PostgreSQL's INTEGER


@dataclass(frozen=True)
class Hostile:
    """A request and the status and fields its problem must name."""

    method: str
    path: str
    status: int
    fields: tuple[str, ...]
    body: str | None = None


def study_body(**overrides: object) -> str:
    return json.dumps(digits_study(**overrides))


def raw_study(text_: str, status: int, *fields: str) -> Hostile:
    return Hostile("POST", "/api/v1/studies", status, fields, text_)


def range_test(doc: dict, status: int, *fields: str) -> Hostile:
    return Hostile("POST", "/api/v1/lr-range-tests", status, fields, json.dumps(doc))


def space_with(param: str, spec: dict) -> str:
    doc = digits_study()
    doc["search_space"][param] = spec
    return json.dumps(doc)


HUGE = int("9" * 400)
ID_CASES = [
    pytest.param(Hostile("GET", f"/api/v1/studies/{BIG}", 404, ("study_id",)), id="study-id-2^70"),
    pytest.param(Hostile("GET", f"/api/v1/studies/{PG_INT_OVERFLOW}", 404, ("study_id",)), id="study-id-2^31"),
    pytest.param(Hostile("GET", f"/api/v1/datasets/{BIG}", 404, ("dataset_id",)), id="dataset-id"),
    pytest.param(Hostile("GET", f"/api/v1/lr-range-tests/{BIG}", 404, ("job_id",)), id="range-test-id"),
    pytest.param(Hostile("GET", f"/api/v1/studies/1/trials/{BIG}", 404, ("number",)), id="trial-number"),
    pytest.param(Hostile("POST", f"/api/v1/studies/{BIG}/cancel", 404, ("study_id",)), id="cancel-id"),
    pytest.param(Hostile("PATCH", f"/api/v1/studies/{BIG}", 404, ("study_id",), '{"priority": "low"}'), id="patch-id"),
    pytest.param(Hostile("GET", f"/api/v1/studies?dataset={PG_INT_OVERFLOW}", 400, ("dataset",)), id="query-dataset"),
    pytest.param(Hostile("GET", f"/api/v1/leaderboard?study={BIG}", 400, ("study",)), id="query-study"),
    pytest.param(Hostile("GET", f"/api/v1/leaderboard?dataset={BIG}", 422, ("dataset",)), id="query-dataset-ref"),
    pytest.param(raw_study(study_body(dataset=BIG), 422, "dataset"), id="body-dataset-id"),
    pytest.param(raw_study(study_body(dataset=2**40), 422, "dataset"), id="body-dataset-int"),
    pytest.param(raw_study(study_body(warm_start={"studies": [2**70]}), 422, "warm_start.studies[0]"), id="warm-start"),
    pytest.param(
        raw_study(study_body(learning_rate_from={"lr_range_test": 2**63}), 422, "learning_rate_from.lr_range_test"),
        id="learning-rate-from",
    ),
    pytest.param(range_test({"dataset": PG_INT_OVERFLOW, "task": {"type": "multiclass"}}, 422, "dataset"), id="rt-ds"),
]
UNICODE_DIGIT_CASES = [
    pytest.param(raw_study(study_body(dataset="²"), 422, "dataset"), id="study-dataset"),
    pytest.param(range_test({"dataset": "²", "task": {"type": "multiclass"}}, 422, "dataset"), id="range-test-dataset"),
    pytest.param(Hostile("GET", "/api/v1/leaderboard?dataset=²", 422, ("dataset",)), id="leaderboard-dataset"),
    pytest.param(Hostile("GET", "/api/v1/studies?limit=²", 400, ("limit",)), id="limit"),
    pytest.param(Hostile("GET", "/api/v1/studies?offset=1_0", 400, ("offset",)), id="underscore-digits"),
    pytest.param(Hostile("GET", "/api/v1/studies/١", 404, ()), id="path-arabic-digit"),
]


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


DEEP = "[" * 1000 + "]" * 1000
NESTING_CASES = [
    pytest.param(raw_study(DEEP, 400, "body"), id="1000-levels"),
    pytest.param(raw_study('{"a":' * 100_000 + "1" + "}" * 100_000, 400, "body"), id="100000-levels"),
    # The body is level 1, task 2, metrics 3: the first list past 32 levels is metrics + 30 indexes.
    pytest.param(
        raw_study(study_body(task={"type": "multiclass", "metrics": nested(40)}), 400, "task.metrics" + "[0]" * 30),
        id="parsed-but-too-deep",
    ),
]
NUMBER_CASES = [
    pytest.param(
        raw_study(
            space_with("learning_rate", {"type": "float", "min": HUGE, "max": HUGE}),
            422,
            "search_space.learning_rate.min",
            "search_space.learning_rate.max",
        ),
        id="study-400-digit-rate",
    ),  # fmt: skip
    pytest.param(
        range_test({"dataset": "digits", "task": {"type": "multiclass"}, "min_lr": HUGE}, 422, "min_lr"), id="rt"
    ),
]
TEXT_CASES = [
    pytest.param(raw_study('{"name": "a\\ud800b"}', 422, "name"), id="lone-surrogate-name"),
    pytest.param(raw_study(study_body(name="a\u0000b"), 422, "name"), id="nul-name"),
    pytest.param(raw_study('{"\\udfff": 1}', 422, "\\udfff"), id="lone-surrogate-key"),
    pytest.param(
        raw_study(
            space_with("optimizer", {"type": "choice", "values": ["sgd\u0000"]}),
            422,
            "search_space.optimizer.values[0]",
        ),
        id="nul-in-space",
    ),  # fmt: skip
    pytest.param(Hostile("GET", "/api/v1/leaderboard?metric=val%00loss", 400, ("metric",)), id="nul-query"),
]
ALL = ID_CASES + UNICODE_DIGIT_CASES + NESTING_CASES + NUMBER_CASES + TEXT_CASES


def stored(store: Store, artifacts: Path) -> tuple[int, ...]:
    with store.engine.connect() as conn:
        tables = ("studies", "trials", "datasets", "jobs")
        counts = tuple(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables)
    files = sum(1 for p in artifacts.rglob("*") if p.is_file()) if artifacts.exists() else 0
    return (*counts, files)


def send(client: FlaskClient, case: Hostile):
    return client.open(case.path, method=case.method, data=case.body, content_type="application/json")


def check(client: FlaskClient, store: Store, settings: Settings, case: Hostile) -> None:
    before = stored(store, settings.artifacts)
    response = send(client, case)
    assert response.status_code == case.status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    if case.fields:
        assert sorted(e["field"] for e in body["errors"]) == sorted(case.fields), body
    assert stored(store, settings.artifacts) == before


@pytest.mark.parametrize("case", ALL)
def test_hostile_input_gets_a_problem_on_sqlite(client, store, settings, case: Hostile) -> None:
    check(client, store, settings, case)


def test_database_dependent_classes_get_a_problem_on_postgres(postgres_url, settings) -> None:
    """Integer range, NUL and lone surrogates failed differently on PostgreSQL (INTEGER is 32 bits; text
    refuses NUL), so every case runs there as well, on one database for speed."""
    pg_settings = settings.with_overrides(database_url=postgres_url)
    store = Store(postgres_url)
    store.upgrade()
    try:
        app = create_app(pg_settings, store=store, enqueue=lambda pool, count: None)
        client = authorized(app.test_client(), make_token(store, "member-of-alpha"))
        for param in ID_CASES + TEXT_CASES + UNICODE_DIGIT_CASES:
            check(client, store, pg_settings, param.values[0])
        # The dashboard's form reaches the core without the API's JSON parser: the core checks too.
        with pytest.raises(InvalidInput) as refused:
            submit_study(store, pg_settings, digits_study(name="form\u0000name"), lambda pool, count: None)
        assert [e.field for e in refused.value.errors] == ["name"]
        assert store.list_studies().total == 0
    finally:
        store.dispose()


def test_a_405_names_the_allowed_methods(client) -> None:
    response = client.delete("/api/v1/studies")
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_dashboard_pages_with_ids_beyond_the_range_are_404(app, member_token) -> None:
    from tests.api.test_authorization import sign_in

    client = app.test_client()
    sign_in(client, member_token)
    for path in (f"/studies/{BIG}", f"/studies/1/trials/{BIG}", f"/lr-range-tests/{PG_INT_OVERFLOW}"):
        assert client.get(path).status_code == 404, path
