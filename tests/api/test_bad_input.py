"""Malformed requests: each gets a 4xx problem+json naming the field at fault, and leaves nothing behind.

"Nothing behind" means no new study, trial or data set row, no new file under the artifacts folder and
no call to ``enqueue``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from tests.conftest import digits_study

STUDIES = "/api/v1/studies"
DATASETS = "/api/v1/datasets"
LEADERBOARD = "/api/v1/leaderboard"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


@dataclass(frozen=True)
class Bad:
    """One malformed request and the problem it must get; ``{study}`` in the path is an existing study's id."""

    method: str
    path: str
    status: int
    fields: tuple[str, ...] = ()
    json: Any = None
    raw: str | None = None
    content_type: str = "application/json"
    upload: tuple[bytes, str] | None = None
    form: dict[str, str] = field(default_factory=dict)
    needs: str | None = None  # "study": a queued study exists; "cancelled": it exists and is cancelled


def study(*fields: str, status: int = 422, **overrides: Any) -> Bad:
    return Bad("POST", STUDIES, status, fields, json=digits_study(**overrides))


def space(param: str, spec: dict, *fields: str) -> Bad:
    """The digits study with ``param`` added to (or replaced in) its search space."""
    doc = digits_study()
    doc["search_space"] = {**doc["search_space"], param: spec}
    return Bad("POST", STUDIES, 422, fields, json=doc)


def raw_study(text: str, *fields: str, status: int = 422, content_type: str = "application/json") -> Bad:
    return Bad("POST", STUDIES, status, fields, raw=text, content_type=content_type)


def get(path: str, status: int, *fields: str, needs: str | None = None) -> Bad:
    return Bad("GET", path, status, fields, needs=needs)


def upload(content: bytes, filename: str, *fields: str, status: int = 422, **form: str) -> Bad:
    return Bad("POST", DATASETS, status, fields, upload=(content, filename), form=form)


def npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


ROWS = [f"{i},{i * 0.5},{i % 3}" for i in range(20)]
X = np.arange(60, dtype=np.float64).reshape(20, 3)
Y = np.arange(20) % 3
NAN_MIN = (
    '{"name": "n", "dataset": "digits", "task": "multiclass", '
    '"search_space": {"learning_rate": {"type": "float", "min": NaN, "max": 0.01}}}'
)
INFINITE_MAX = NAN_MIN.replace('NaN, "max": 0.01', '0.001, "max": Infinity')
SIXTY_FIVE = {f"p{i}": {"type": "int", "min": 0, "max": 3} for i in range(65)}


CASES = [
    # -- the body itself
    pytest.param(raw_study("{not json", "body", status=400), id="body-not-json"),
    pytest.param(Bad("POST", STUDIES, 422, ("body",), json=[digits_study()]), id="body-a-list"),
    pytest.param(raw_study('{"name": "x"}', "body", status=415, content_type="text/plain"), id="text-plain-415"),
    pytest.param(Bad("POST", STUDIES, 415, ("body",)), id="no-body-415"),
    pytest.param(study("budget", budget=5), id="unknown-top-level-field"),
    # -- the study's own fields
    pytest.param(study("name", name=None), id="missing-name"),
    pytest.param(study("name", name="  "), id="blank-name"),
    pytest.param(study("name", name="x" * 201), id="name-too-long"),
    pytest.param(study("max_trials", max_trials="ten"), id="max-trials-a-string"),
    pytest.param(study("parallelism", parallelism=1.5), id="parallelism-a-float"),
    pytest.param(study("max_trials", max_trials=-3), id="negative-max-trials"),
    pytest.param(study("max_trials", max_trials=10_001), id="max-trials-over-limit"),
    pytest.param(study("parallelism", parallelism=0), id="zero-parallelism"),
    pytest.param(study("seed", seed=True), id="seed-a-boolean"),
    pytest.param(study("priority", priority="urgent"), id="unknown-priority"),
    pytest.param(study("resources.gpu_slots", resources={"gpu": 1, "gpu_slots": 0}), id="gpu-slots-0"),
    pytest.param(study("resources.gpu_slots", resources={"gpu": 1, "gpu_slots": 1.5}), id="gpu-slots-a-float"),
    pytest.param(study("resources.gpu_slots", resources={"gpu": 1, "gpu_slots": 65}), id="gpu-slots-above-64"),
    pytest.param(study("resources.gpu_slots", resources={"cpu": 1, "gpu_slots": 2}), id="gpu-slots-without-gpu"),
    # -- search space
    pytest.param(
        space("hidden_layers", {"type": "int", "min": 3, "max": 1}, "search_space.hidden_layers.min"),
        id="int-min-above-max",
    ),
    pytest.param(
        space("neurons", {"type": "int", "min": 32, "max": 32}, "search_space.neurons.min"), id="int-min-equals-max"
    ),
    pytest.param(
        space(
            "learning_rate",
            {"type": "float", "min": 0, "max": 0.1, "sampling": "log"},
            "search_space.learning_rate.min",
        ),
        id="log-sampling-min-zero",
    ),
    pytest.param(
        space("learning_rate", {"type": "float", "min": "0.001", "max": 0.1}, "search_space.learning_rate.min"),
        id="float-min-a-string",
    ),
    pytest.param(raw_study(NAN_MIN, "search_space.learning_rate.min"), id="float-min-nan-literal"),
    pytest.param(raw_study(INFINITE_MAX, "search_space.learning_rate.max"), id="float-max-infinity-literal"),
    pytest.param(
        space("optimizer", {"type": "choice", "values": ["sgd", "adamm"]}, "search_space.optimizer.values[1]"),
        id="unknown-optimizer",
    ),
    pytest.param(
        space("activation", {"type": "choice", "values": ["relu", "relux"]}, "search_space.activation.values[1]"),
        id="unknown-activation",
    ),
    pytest.param(
        space("optimizer", {"type": "choice", "values": []}, "search_space.optimizer.values"), id="empty-choice"
    ),
    pytest.param(
        space("units", {"type": "integer", "min": 1, "max": 4}, "search_space.units.type"), id="unknown-parameter-type"
    ),
    pytest.param(study("search_space", search_space=SIXTY_FIVE), id="65-parameters"),
    pytest.param(study("search_space", search_space={}), id="empty-search-space"),
    pytest.param(
        space(
            "momentum",
            {"type": "float", "min": 0.0, "max": 0.9, "condition": {"parent": "solver", "values": ["sgd"]}},
            "search_space.momentum.condition.parent",
        ),
        id="condition-on-undefined-parent",
    ),
    # -- task, objective, algorithm, training
    pytest.param(study("task.type", task={"type": "ranking"}), id="unknown-task-type"),
    pytest.param(study("task.loss", task={"type": "multiclass", "loss": "huber"}), id="huber-on-multiclass"),
    pytest.param(study("task.scale_target", task={"type": "multiclass", "scale_target": True}), id="scaled-classes"),
    pytest.param(
        study("task.scale_target", dataset="builtin:diabetes", task={"type": "regression", "scale_target": "on"}),
        id="scale-target-not-a-boolean",
    ),
    pytest.param(study("objective.name", objective={"name": "val_mae"}), id="objective-not-reported"),
    pytest.param(study("algorithm.name", algorithm={"name": "cmaes"}), id="unknown-algorithm"),
    pytest.param(study("algorithm.initial_points", algorithm={"name": "tpe", "initial_points": 0}), id="tpe-initial-0"),
    pytest.param(study("algorithm.sampler", algorithm={"name": "asha", "sampler": "cmaes"}), id="unknown-asha-sampler"),
    pytest.param(
        study("algorithm.initial_points", algorithm={"name": "asha", "initial_points": 4}),
        id="asha-initial-points-without-a-model-sampler",
    ),
    pytest.param(
        study("algorithm.initial_points", algorithm={"name": "asha", "sampler": "tpe", "initial_points": 99}),
        id="asha-initial-points-over-budget",
    ),
    pytest.param(
        study("algorithm.initial_points", algorithm={"name": "bayesian", "initial_points": 99}),
        id="initial-over-budget",
    ),
    pytest.param(
        study("algorithm.max_trials_per_bracket", algorithm={"name": "hyperband", "max_trials_per_bracket": 3}),
        id="unknown-hyperband-option",
    ),
    pytest.param(study("algorithm.factor", algorithm={"name": "hyperband", "factor": 1}), id="hyperband-factor-1"),
    pytest.param(study("early_stopping.patience", early_stopping={"patience": -1}), id="negative-patience"),
    pytest.param(study("validation.fraction", validation={"fraction": 0.9}), id="validation-fraction-0.9"),
    pytest.param(
        study("early_stopping.max_epochs", algorithm="hyperband", early_stopping={"max_epochs": "ten"}),
        id="hyperband-with-max-epochs-a-string",
    ),
    pytest.param(
        space(
            "units", {"type": "int", "min": 1, "max": 10**400, "sampling": "log", "step": 2}, "search_space.units.max"
        ),
        id="log-int-with-a-401-digit-max",
    ),
    pytest.param(
        Bad(
            "POST",
            STUDIES,
            422,
            ("search_space",),
            json={k: v for k, v in digits_study().items() if k != "search_space"},
        ),
        id="missing-search-space",
    ),
    # -- data sets a study names
    pytest.param(study("dataset", dataset="builtin:nope"), id="unknown-builtin"),
    pytest.param(study("dataset", dataset="nope"), id="unknown-bare-name"),
    pytest.param(study("dataset", dataset="sha256:" + "0" * 64), id="never-uploaded-sha256"),
    pytest.param(study("dataset", dataset=12345), id="unknown-dataset-id"),
    pytest.param(study("task.type", dataset="builtin:diabetes"), id="multiclass-on-diabetes"),
    pytest.param(study("task.type", dataset="builtin:synthetic_regression"), id="multiclass-on-continuous"),
    # -- unknown resources and routes
    pytest.param(get(f"{STUDIES}/999", 404), id="get-unknown-study"),
    pytest.param(Bad("POST", f"{STUDIES}/999/cancel", 404), id="cancel-unknown-study"),
    pytest.param(get(f"{STUDIES}/999/trials", 404), id="trials-of-unknown-study"),
    pytest.param(get(f"{STUDIES}/999/leaderboard", 404), id="leaderboard-of-unknown-study"),
    pytest.param(get(f"{STUDIES}/999/best-model", 404), id="best-model-of-unknown-study"),
    pytest.param(get(STUDIES + "/{study}/trials/999", 404, needs="study"), id="unknown-trial"),
    pytest.param(get(STUDIES + "/{study}/trials/999/model", 404, needs="study"), id="model-of-unknown-trial"),
    pytest.param(get(STUDIES + "/{study}/best-model", 404, needs="study"), id="best-model-before-any-trial"),
    pytest.param(get(f"{DATASETS}/999", 404, "dataset"), id="unknown-dataset"),
    pytest.param(get(f"{STUDIES}/abc", 404), id="study-id-not-a-number"),
    pytest.param(Bad("DELETE", STUDIES + "/{study}", 405, needs="study"), id="delete-not-allowed"),
    pytest.param(Bad("POST", STUDIES + "/{study}/cancel", 409, needs="cancelled"), id="cancel-twice-409"),
    # -- query parameters
    pytest.param(get(f"{STUDIES}?limit=0", 400, "limit"), id="limit-0"),
    pytest.param(get(f"{STUDIES}?limit=abc", 400, "limit"), id="limit-abc"),
    pytest.param(get(f"{STUDIES}?limit=501", 400, "limit"), id="limit-501"),
    pytest.param(get(f"{STUDIES}?offset=-1", 400, "offset"), id="offset-negative"),
    pytest.param(get(f"{STUDIES}?status=bogus", 400, "status"), id="study-status-bogus"),
    pytest.param(get(f"{STUDIES}?dataset=abc", 400, "dataset"), id="study-dataset-abc"),
    pytest.param(get(STUDIES + "/{study}/trials?sort=bogus", 400, "sort", needs="study"), id="trial-sort-bogus"),
    pytest.param(get(STUDIES + "/{study}/trials?status=bogus", 400, "status", needs="study"), id="trial-status-bogus"),
    pytest.param(get(STUDIES + "/{study}/trials?order=up", 400, "order", needs="study"), id="trial-order-bogus"),
    pytest.param(get(STUDIES + "/{study}/trials?limit=0", 400, "limit", needs="study"), id="trial-limit-0"),
    pytest.param(get(STUDIES + "/{study}/leaderboard?offset=x", 400, "offset", needs="study"), id="study-board-offset"),
    pytest.param(get(f"{LEADERBOARD}?task=bogus", 400, "task"), id="leaderboard-task-bogus"),
    pytest.param(get(f"{LEADERBOARD}?study=abc", 400, "study"), id="leaderboard-study-abc"),
    pytest.param(get(f"{LEADERBOARD}?dataset=nope", 422, "dataset"), id="leaderboard-unknown-dataset"),
    pytest.param(get(f"{DATASETS}?offset=-5", 400, "offset"), id="datasets-offset-negative"),
    # -- uploads
    pytest.param(Bad("POST", DATASETS, 400, ("file",), form={"target_column": "y"}), id="no-file-field"),
    pytest.param(upload(b"a,b\n1,2\n", "", "file", status=400), id="file-without-name"),
    pytest.param(upload(b"x y\n1 2\n", "data.txt", "file"), id="txt-file"),
    pytest.param(
        upload(npz(x=np.array([{"a": 1}] * 20, dtype=object), y=Y), "pickled.npz", "file"), id="pickle-bearing-npz"
    ),
    pytest.param(upload(npz(x=X), "no-y.npz", "file"), id="npz-missing-y"),
    pytest.param(upload(npz(x=X, y=Y[:5]), "short-y.npz", "file"), id="npz-lengths-differ"),
    pytest.param(upload(npz(x=X[:5], y=Y[:5]), "tiny.npz", "file"), id="npz-too-few-rows"),
    pytest.param(upload(npz(x=np.full((20, 3), np.nan), y=Y), "nan.npz", "file"), id="npz-with-nan"),
    pytest.param(upload(npy(X), "array.npz", "file"), id="npy-named-npz"),
    pytest.param(upload(b"\x00garbage" * 10, "garbage.npz", "file"), id="garbage-npz"),
    pytest.param(
        upload(csv("a,b,c", ROWS), "houses.csv", "target_column", target_column="price"), id="csv-without-target"
    ),
    pytest.param(upload(csv("a,b,c", ROWS), "houses.csv", "target_column"), id="csv-target-not-given"),
    pytest.param(
        upload(csv("a,b,c", [*ROWS[:-1], "x,1,2"]), "houses.csv", "file", target_column="c"), id="csv-text-feature"
    ),
    pytest.param(upload(csv("a,b,c", ROWS[:3]), "houses.csv", "file", target_column="c"), id="csv-too-few-rows"),
    pytest.param(upload(csv("a,b,c", [*ROWS, "1,2"]), "houses.csv", "file", target_column="c"), id="csv-ragged-row"),
    pytest.param(upload(b"", "empty.csv", "file", target_column="c"), id="csv-empty"),
    pytest.param(upload(b"\xff\xfe\x00a,b", "utf16.csv", "file", target_column="b"), id="csv-not-utf8"),
]


def send(client, bad: Bad, study_id: int | None = None):
    path = bad.path.format(study=study_id)
    if bad.upload is not None or bad.form:
        data: dict[str, Any] = dict(bad.form)
        if bad.upload is not None:
            content, filename = bad.upload
            data["file"] = (io.BytesIO(content), filename)
        return client.open(path, method=bad.method, data=data, content_type="multipart/form-data")
    if bad.raw is not None:
        return client.open(path, method=bad.method, data=bad.raw, content_type=bad.content_type)
    if bad.json is not None:
        return client.open(path, method=bad.method, json=bad.json)
    return client.open(path, method=bad.method)


def assert_problem(response, status: int, fields: tuple[str, ...]) -> dict:
    """A problem+json response with ``status`` whose ``errors`` name exactly ``fields`` (when any are given)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["type"].startswith("urn:tuner-service:problem:")
    assert body["instance"] == response.request.path
    if fields:
        assert sorted({e["field"] for e in body["errors"]}) == sorted(fields), body
        assert all(e["reason"] for e in body["errors"])
    return body


def make_study(client, *, cancelled: bool = False) -> int:
    response = client.post(STUDIES, json=digits_study())
    assert response.status_code == 201, response.get_data(as_text=True)
    study_id = response.get_json()["id"]
    if cancelled:
        assert client.post(f"{STUDIES}/{study_id}/cancel").status_code == 200
    return study_id


@pytest.mark.parametrize("bad", CASES)
def test_bad_request_gets_a_problem_and_stores_nothing(client, footprint, bad: Bad) -> None:
    study_id = make_study(client, cancelled=bad.needs == "cancelled") if bad.needs else None
    before = footprint()
    response = send(client, bad, study_id)
    assert_problem(response, bad.status, bad.fields)
    assert footprint() == before


def test_every_problem_is_reported_at_once(client, footprint) -> None:
    doc = digits_study(max_trials=-1)
    doc["search_space"]["hidden_layers"] = {"type": "int", "min": 5, "max": 2}
    doc["search_space"]["optimizer"] = {"type": "choice", "values": ["sgd", "adamm"]}
    before = footprint()
    body = assert_problem(
        client.post(STUDIES, json=doc),
        422,
        ("max_trials", "search_space.hidden_layers.min", "search_space.optimizer.values[1]"),
    )
    assert len(body["errors"]) == 3
    assert footprint() == before


def test_problems_of_every_section_come_together(client) -> None:
    doc = digits_study(
        name="",
        parallelism=0,
        algorithm={"name": "bayesian", "alpha": 2.0},
        early_stopping={"patience": -1, "bogus": 1},
        validation={"fraction": 0.9},
        objective={"name": "val_accuracy", "direction": "up"},
        extra=True,
    )
    assert_problem(
        client.post(STUDIES, json=doc),
        422,
        (
            "name",
            "parallelism",
            "algorithm.alpha",
            "early_stopping.patience",
            "early_stopping.bogus",
            "validation.fraction",
            "objective.direction",
            "extra",
        ),
    )


@pytest.mark.parametrize(
    "size",
    [pytest.param(5_000, id="over-the-service-limit"), pytest.param(1024 * 1024 + 5_000, id="over-the-request-limit")],
)
def test_upload_over_the_size_limit_is_413(small_upload_client, footprint, size: int) -> None:
    rows = [f"{i},{i % 2}" for i in range(size // 4)]
    content = csv("a,label", rows)
    assert len(content) > size
    before = footprint()
    response = small_upload_client.post(
        DATASETS,
        data={"file": (io.BytesIO(content), "big.csv"), "target_column": "label"},
        content_type="multipart/form-data",
    )
    assert_problem(response, 413, ("file",))
    assert footprint() == before


@pytest.mark.timeout(60)
def test_an_absurd_layer_count_is_refused_without_expanding_it(client, footprint) -> None:
    """Expanding per-layer widths for a billion layers would run for hours; the timeout is the guard."""
    doc = digits_study()
    doc["search_space"]["hidden_layers"] = {"type": "choice", "values": [0, 1_000_000_000]}
    doc["search_space"]["neurons"] = {"type": "int", "min": 16, "max": 64, "per_layer": True}
    before = footprint()
    response = client.post(STUDIES, json=doc)
    assert response.status_code == 422
    assert "search_space.hidden_layers.values[1]" in {e["field"] for e in response.get_json()["errors"]}
    assert footprint() == before
