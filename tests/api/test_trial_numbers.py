"""One public trial identifier: every trial URL takes the trial's number in its study (the number the leaderboard
shows, from 0), never the global id; epochs are counted from 1 wherever the API shows them."""

from __future__ import annotations

import uuid

from tests.conftest import digits_study
from tuner_service.search import TrialOutcome, claim_next, finish_trial

STUDIES = "/api/v1/studies"


def finished_trials(client, store, settings, count: int, score: float = 0.5) -> tuple[int, list]:
    """A study with ``count`` finished trials, each with three stored epochs (stored from 0, as Keras counts)."""
    study = client.post(STUDIES, json=digits_study(max_trials=count)).get_json()
    trials = []
    for index in range(count):
        claimed = claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
        assert claimed.trial.study_id == study["id"]
        for epoch in range(3):
            store.record_epoch(claimed.trial.id, 0, epoch, {"val_accuracy": score + index / 10 + epoch / 100})
        model = settings.artifacts / "studies" / str(study["id"]) / f"trial-{index}.keras"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(f"PK trial {index}".encode())
        outcome = TrialOutcome(
            "completed",
            {"val_accuracy": score + index / 10},
            best_epoch=1,
            model_path=str(model.relative_to(settings.artifacts)),
        )
        finish_trial(store, study["id"], claimed.trial.id, outcome)
        trials.append(store.trial_by_number(study["id"], claimed.trial.number))
    return study["id"], trials


def test_trial_urls_take_the_number_in_the_study_not_the_global_id(client, store, settings) -> None:
    first, _ = finished_trials(client, store, settings, 2)
    second, trials = finished_trials(client, store, settings, 2, score=0.7)
    assert [t.number for t in trials] == [0, 1] and [t.id for t in trials] == [3, 4]
    board = client.get(f"{STUDIES}/{second}/leaderboard").get_json()["items"]
    best = board[0]
    assert best["number"] == 1 and best["trial_id"] == 4  # the global id stays an extra field
    detail = client.get(f"{STUDIES}/{second}/trials/{best['number']}").get_json()
    assert detail["number"] == 1 and detail["id"] == 4 and detail["score"] == best["score"]
    # The old global id is not a trial number of this study: 404, never another trial.
    assert client.get(f"{STUDIES}/{second}/trials/4").status_code == 404
    assert client.get(f"{STUDIES}/{second}/trials/3/model").status_code == 404
    model = client.get(f"{STUDIES}/{second}/trials/1/model")
    assert model.status_code == 200 and model.data == b"PK trial 1"
    assert f"study-{second}-trial-1.keras" in model.headers["Content-Disposition"]
    study = client.get(f"{STUDIES}/{second}").get_json()
    assert study["best_trial_number"] == 1 and study["best_trial_id"] == 4
    assert client.get(f"{STUDIES}/{first}").get_json()["best_trial_number"] == 1


def test_epochs_and_best_epoch_count_from_one(client, store, settings) -> None:
    study, [trial] = finished_trials(client, store, settings, 1)
    assert trial.best_epoch == 1  # stored as Keras counts: the second epoch
    detail = client.get(f"{STUDIES}/{study}/trials/0").get_json()
    assert [e["epoch"] for e in detail["epochs"]] == [1, 2, 3]
    assert detail["best_epoch"] == 2
    assert client.get(f"{STUDIES}/{study}/trials?status=completed").get_json()["items"][0]["best_epoch"] == 2
    assert client.get(f"{STUDIES}/{study}/leaderboard").get_json()["items"][0]["best_epoch"] == 2
    assert client.get("/api/v1/leaderboard?dataset=digits").get_json()["items"][0]["best_epoch"] == 2


def test_rerun_paths_take_the_trial_number(client, store, settings, recorder) -> None:
    finished_trials(client, store, settings, 1)
    study, _ = finished_trials(client, store, settings, 2)
    response = client.post(f"{STUDIES}/{study}/trials/1/rerun", json={"repeats": 1})
    assert response.status_code == 202
    assert response.headers["Location"].endswith(f"/studies/{study}/trials/1/reruns/{response.get_json()['id']}")
    assert response.get_json()["trial_id"] == store.trial_by_number(study, 1).id
    assert client.get(response.headers["Location"]).status_code == 200
    wrong = response.headers["Location"].replace("/trials/1/", "/trials/0/")
    assert client.get(wrong).status_code == 404


def test_a_missing_data_set_is_reported_with_the_other_faults(client, store) -> None:
    doc = digits_study(dataset="sha256:" + "0" * 64, max_trials=0)
    response = client.post(STUDIES, json=doc)
    assert response.status_code == 422
    fields = [e["field"] for e in response.get_json()["errors"]]
    assert fields == ["max_trials", "dataset"]
    unknown = client.post(STUDIES, json=digits_study(dataset="builtin:nope", max_trials=0)).get_json()
    assert [e["field"] for e in unknown["errors"]] == ["max_trials", "dataset"]


def test_a_hyperband_study_says_where_its_budget_comes_from(client) -> None:
    doc = digits_study(algorithm={"name": "hyperband", "max_epochs": 9, "factor": 3}, max_trials=10)
    body = client.post(STUDIES, json=doc).get_json()
    assert body["max_trials"] == body["progress"]["budget"] == 23
    assert (
        body["budget_basis"]
        == "hyperband brackets for max_epochs 9, factor 3, 1 iteration(s); max_trials does not apply"
    )
    assert client.post(STUDIES, json=digits_study()).get_json()["budget_basis"] == "max_trials"


def test_the_docs_page_shows_whole_descriptions_without_backquotes(client) -> None:
    page = client.get("/api/v1/docs").get_data(as_text=True)
    assert "`" not in page
    # A docstring wrapped over two lines is shown whole, its code as code.
    assert "<code>repeats</code> other seeds (how much does the score spread?)" in page
    assert "/api/v1/studies/{study_id}/trials/{number}" in page
    operation = client.get("/api/v1/openapi.json").get_json()["paths"]["/api/v1/studies/{study_id}/trials/{number}"]
    # One sentence over two lines: the summary is all of it (it used to stop at the line break).
    assert operation["get"]["summary"].endswith("its epoch curve (epochs and ``best_epoch`` counted from 1)")
