"""The model-size guard at submission: a study or range test whose largest model is over the deployment's
limit (or its team's lower one) gets 422 naming the fields at fault, and nothing is stored."""

from __future__ import annotations

from tests.api.conftest import authorized
from tests.api.test_bad_input import assert_problem
from tests.conftest import digits_study, make_token
from tuner_service.api import create_app

STUDIES = "/api/v1/studies"
RANGE_TESTS = "/api/v1/lr-range-tests"


def test_64_layers_of_8192_neurons_are_refused(client, footprint) -> None:
    doc = digits_study()
    doc["search_space"]["hidden_layers"] = {"type": "int", "min": 1, "max": 64}
    doc["search_space"]["neurons"] = {"type": "int", "min": 16, "max": 8192}
    before = footprint()
    body = assert_problem(client.post(STUDIES, json=doc), 422, ("search_space.hidden_layers", "search_space.neurons"))
    assert "TUNER_MAX_MODEL_PARAMS" in body["errors"][0]["reason"]
    assert footprint() == before


def test_a_range_test_of_8192_by_8192_layers_is_refused(client, store) -> None:
    doc = {"dataset": "digits", "task": {"type": "multiclass"}, "architecture": {"hidden_layers": 8, "neurons": 8192}}
    assert_problem(client.post(RANGE_TESTS, json=doc), 422, ("architecture.hidden_layers", "architecture.neurons"))
    assert store.list_jobs(kind="lr_range_test") == []


def test_the_largest_batch_is_held_to_the_activation_limit(settings, store, recorder, member_token) -> None:
    app = create_app(settings.with_overrides(max_activation_bytes=2**20), store=store, enqueue=recorder)
    doc = digits_study()
    doc["search_space"]["batch_size"] = {"type": "choice", "values": [32, 4096]}
    body = assert_problem(
        authorized(app.test_client(), member_token).post(STUDIES, json=doc),
        422,
        ("search_space.batch_size", "search_space.hidden_layers", "search_space.neurons"),
    )
    assert "TUNER_MAX_ACTIVATION_BYTES" in body["detail"]


def test_a_team_limit_is_lower_than_the_deployments(app, store, footprint) -> None:
    """The digits study's largest model has 8 970 parameters: over team beta's 5 000, fine for alpha."""
    small = authorized(app.test_client(), make_token(store, "member-of-beta", team="beta", max_model_params=5_000))
    before = footprint()
    fields = ("search_space.hidden_layers", "search_space.neurons")
    body = assert_problem(small.post(STUDIES, json=digits_study()), 422, fields)
    assert "8,970 parameters" in body["detail"] and "team's limit" in body["detail"]
    assert footprint() == before
    alpha = authorized(app.test_client(), make_token(store, "member-of-alpha"))
    assert alpha.post(STUDIES, json=digits_study()).status_code == 201
