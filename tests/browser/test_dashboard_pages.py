"""The dashboard through Flask's test client (no browser): sign-in and its session, CSRF, team isolation,
roles, every page rendering, the new-study form's errors, the controls, uploads, learning-rate range tests,
reruns of a trial, and no external URL."""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.browser.conftest import ENVIRONMENT, add_trials, csrf_of, sign_in
from tests.conftest import make_token
from tuner_service.store import Store
from tuner_service.store.models import utcnow

RESULTS = [
    ({"hidden_layers": 0, "neurons": 16, "learning_rate": 0.001, "optimizer": "adam", "batch_size": 32}, 0.80),
    ({"hidden_layers": 1, "neurons": 32, "learning_rate": 0.003, "optimizer": "sgd", "batch_size": 64}, 0.90),
    ({"hidden_layers": 2, "neurons": 64, "learning_rate": 0.01, "optimizer": "adam", "batch_size": 32}, 0.95),
    ({"hidden_layers": 1, "neurons": 48, "learning_rate": 0.002, "optimizer": "sgd", "batch_size": 64}, 0.85),
    ({"hidden_layers": 2, "neurons": 20, "learning_rate": 0.005, "optimizer": "adam", "batch_size": 64}, None),
]
PAGES = ["/", "/queue", "/datasets", "/studies/new", "/lr-range-tests"]


def post(client: FlaskClient, path: str, page: str = "/", **data: str):
    """POST a form as the browser would: with the CSRF token from a page of the same session."""
    token = csrf_of(client.get(page).text)
    return client.post(path, data={"csrf_token": token, **data})


# -- signing in -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", [*PAGES, "/studies/1", "/studies/1/trials/1", "/studies/1/best-model", "/lr-range-tests/1"]
)
def test_every_page_without_a_session_redirects_to_sign_in(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/signin" and parse_qs(location.query)["next"] == [path]


def test_live_json_without_a_session_answers_401_with_the_sign_in_address(app: Flask) -> None:
    response = app.test_client().get("/studies/1/live.json")
    assert response.status_code == 401
    assert response.get_json()["signin"].startswith("/signin?next=")


def test_signing_in_keeps_only_the_token_digest_in_an_httponly_samesite_cookie(app: Flask, member_token: str) -> None:
    client = app.test_client()
    page = client.get("/signin?next=/queue")
    response = client.post("/signin", data={"token": member_token, "csrf_token": csrf_of(page.text), "next": "/queue"})
    assert response.status_code == 302 and response.headers["Location"] == "/queue"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    value = client.get_cookie("session").value
    data = app.session_interface.get_signing_serializer(app).loads(value)
    assert data["token_digest"] == hashlib.sha256(member_token.encode()).hexdigest()
    assert member_token not in str(data) and member_token not in value
    assert client.get("/queue").status_code == 200


def test_a_wrong_token_is_refused_and_the_redirect_stays_on_this_site(app: Flask, member_token: str) -> None:
    client = app.test_client()
    page = client.get("/signin")
    refused = client.post("/signin", data={"token": "tks_nope", "csrf_token": csrf_of(page.text)})
    assert refused.status_code == 401
    assert "unknown, revoked or expired" in refused.text
    page = client.get("/signin")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        response = client.post(
            "/signin", data={"token": member_token, "csrf_token": csrf_of(page.text), "next": target}
        )
        assert response.headers["Location"] == "/"
        page = client.get("/signin")


def test_revoking_the_token_signs_the_session_out(app: Flask, store: Store, member: FlaskClient) -> None:
    assert member.get("/").status_code == 200
    assert store.revoke_token(_token_prefix(store, "ann")) == 1
    response = member.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/signin")
    assert member.get("/studies/1/live.json").status_code == 401


def _token_prefix(store: Store, user: str) -> str:
    """The displayed prefix of the user's only token, as an admin would revoke it."""
    from sqlalchemy import select

    from tuner_service.store.models import TokenRow, UserRow

    with store._read() as session:
        return session.scalar(select(TokenRow.prefix).join(UserRow, UserRow.id == TokenRow.user_id).where(
            UserRow.name == user
        ))  # fmt: skip


def test_an_expired_token_stands_for_nobody(store: Store) -> None:
    make_token(store, "old", team="alpha")
    token, _ = store.create_token("old", expires_at=utcnow() - timedelta(seconds=1))
    assert store.authenticate_digest(token.digest) is None
    fresh, _ = store.create_token("old", expires_at=utcnow() + timedelta(hours=1))
    assert store.authenticate_digest(fresh.digest).user_name == "old"


def test_sign_out_ends_the_session(member: FlaskClient) -> None:
    assert post(member, "/signout").status_code == 302
    assert member.get("/").status_code == 302


# -- CSRF -----------------------------------------------------------------------------------------------
def test_a_post_without_the_csrf_token_is_rejected_and_changes_nothing(member: FlaskClient, submit, store) -> None:
    study = submit()
    assert member.post(f"/studies/{study.id}/cancel").status_code == 400
    assert member.post(f"/studies/{study.id}/cancel", data={"csrf_token": "forged"}).status_code == 400
    assert store.get_study(study.id).status == "queued"
    assert member.post("/signin", data={"token": "x"}).status_code == 400
    assert post(member, f"/studies/{study.id}/cancel").status_code == 302
    assert store.get_study(study.id).status == "cancelled"


# -- team isolation and roles ---------------------------------------------------------------------------
def test_another_teams_study_is_404_on_every_page_and_absent_from_the_list(
    app: Flask, store: Store, member: FlaskClient, submit
) -> None:
    make_token(store, "bob", team="beta")
    theirs = submit(team="beta", name="beta-secret-study")
    [trial_id] = add_trials(store, theirs.id, RESULTS[:1])
    for path in (
        f"/studies/{theirs.id}",
        f"/studies/{theirs.id}/live.json",
        f"/studies/{theirs.id}/trials/{trial_id}",
        f"/studies/{theirs.id}/trials/{trial_id}/live.json",
        f"/studies/{theirs.id}/best-model",
        f"/studies/{theirs.id}/trials/{trial_id}/model",
    ):
        assert member.get(path).status_code == 404, path
    for action in ("cancel", "pause", "resume", "priority"):
        assert post(member, f"/studies/{theirs.id}/{action}", priority="high").status_code == 404
    assert "beta-secret-study" not in member.get("/").text
    assert "beta-secret-study" not in member.get("/queue").text
    assert member.get(f"/studies/live.json?ids={theirs.id}").get_json()["html"] == {}
    admin = sign_in(app.test_client(), make_token(store, "root", team="alpha", role="admin"))
    assert "beta-secret-study" in admin.get("/").text
    assert admin.get(f"/studies/{theirs.id}").status_code == 200


def test_a_viewer_reads_but_gets_403_on_every_write(app: Flask, store: Store, submit) -> None:
    viewer = sign_in(app.test_client(), make_token(store, "vic", team="alpha", role="viewer"))
    study = submit()
    assert viewer.get(f"/studies/{study.id}").status_code == 200
    assert "Cancel study" not in viewer.get(f"/studies/{study.id}").text
    assert viewer.get("/studies/new").status_code == 403
    for action in ("cancel", "pause", "resume", "priority"):
        assert post(viewer, f"/studies/{study.id}/{action}", priority="high").status_code == 403
    assert post(viewer, "/studies/new", page="/", name="x").status_code == 403
    upload = {"file": (io.BytesIO(b"a,b\n1,2\n"), "x.csv"), "target_column": "b"}
    token = csrf_of(viewer.get("/").text)
    assert viewer.post("/datasets", data={**upload, "csrf_token": token}).status_code == 403
    assert store.get_study(study.id).status == "queued"


# -- pages ----------------------------------------------------------------------------------------------
def test_the_study_page_shows_leaderboard_curves_importance_and_the_best_values(
    member: FlaskClient, store: Store, submit
) -> None:
    study = submit(name="page-study", max_trials=5)
    ids = add_trials(store, study.id, RESULTS)
    html = member.get(f"/studies/{study.id}").text
    assert '<table class="data sortable" id="trials-table">' in html and "<caption>" in html
    assert html.count('scope="col"') >= 8 and 'scope="row"' in html
    for chart in ("chart-curves", "chart-best", "chart-parcoords", "chart-importance"):
        assert re.search(rf'id="{chart}" role="img" aria-label="[^"]{{20,}}"', html), chart
    assert "RandomForestRegressor" in html and "impurity" in html
    assert "hp.Fixed(&#39;neurons&#39;, 64)" in html  # the best trial's (#2) values, pinned
    assert "&#34;learning_rate&#34;: 0.01" in html  # the best values as JSON
    assert 'value="5" max="5"' in html  # <progress>: 5 finished of 5
    live = member.get(f"/studies/{study.id}/live.json").get_json()
    assert set(live["html"]) == {"study-summary", "trials-table-wrap", "importance", "best"}
    curves = live["figures"]["chart-curves"]["figure"]["data"]
    assert any(t["name"].startswith("best epoch") for t in curves)
    parcoords = live["figures"]["chart-parcoords"]["figure"]["data"][0]
    assert [d["label"] for d in parcoords["dimensions"]][-1] == "val_accuracy"
    labels = [d["label"] for d in parcoords["dimensions"]]
    assert "log10(neurons)" in labels and "log10(learning_rate)" in labels  # log-sampled ranges on a log axis
    optimizer = parcoords["dimensions"][labels.index("optimizer")]
    assert optimizer["ticktext"] == ["sgd", "adam"]  # choices in the order the space lists them
    importance = live["figures"]["chart-importance"]["figure"]["data"][0]
    assert sorted(importance["y"]) == sorted(["hidden_layers", "neurons", "learning_rate", "optimizer", "batch_size"])
    trial = member.get(f"/studies/{study.id}/trials/{ids[-1]}").text
    assert "the loss diverged" in trial and "cpu0" in trial and 'id="chart-trial" role="img"' in trial
    assert "<caption>3 epoch(s)" in trial


def test_importance_waits_for_four_finished_trials(member: FlaskClient, store: Store, submit) -> None:
    study = submit()
    add_trials(store, study.id, RESULTS[:3])
    html = member.get(f"/studies/{study.id}").text
    assert "needs at least 4 finished trials to estimate; 3 so far" in html


def test_the_studies_list_filters_by_status_and_shows_progress(member: FlaskClient, store: Store, submit) -> None:
    first = submit(name="first-study")
    submit(name="second-study")
    store.cancel_study(first.id)
    everything = member.get("/").text
    assert "first-study" in everything and "second-study" in everything and "<progress" in everything
    cancelled = member.get("/?status=cancelled").text
    assert "first-study" in cancelled and "second-study" not in cancelled
    live = member.get(f"/studies/live.json?ids={first.id}").get_json()
    assert f"study-row-{first.id}" in live["html"] and live["done"] is True


def test_the_queue_page_lists_waiting_studies_with_position_and_reason(member: FlaskClient, submit, store) -> None:
    study = submit(name="waiting-study")
    store.control_study(study.id, action="pause")
    html = member.get("/queue").text
    assert "waiting-study" in html and ">paused<" in html
    assert member.get("/queue/live.json").status_code == 200


def test_a_ready_study_first_in_line_starts_now_on_the_queue_page(member: FlaskClient, submit, store) -> None:
    study = submit(name="ready-study")
    add_trials(store, study.id, [({"hidden_layers": 1}, 0.9)])  # a measured trial time: the queue has an ETA
    html = member.get("/queue").text
    row = re.search(r"ready-study</a></th>(.*?)</tr>", html, re.S)
    assert row and "ready: next free worker" in row[1]
    # "Next start in" follows the reason: "now", not a countdown that is already over ("0.0 s")
    assert re.search(r'ready: next free worker</td>\s*<td class="num">now</td>', row[1])


# -- the new-study form ---------------------------------------------------------------------------------
def form_values(**changes: str) -> dict[str, str]:
    from tuner_service.dashboard.study_form import DEFAULTS

    return {**DEFAULTS, "name": "from-the-form", **changes}


def test_the_form_shows_each_error_next_to_its_field_and_stores_nothing(
    member: FlaskClient, store: Store, recorder
) -> None:
    space = '{"neurons": {"type": "int", "min": 300, "max": 64}}'
    response = post(member, "/studies/new", page="/studies/new", **form_values(search_space=space, max_trials="0"))
    assert response.status_code == 422
    html = response.text
    assert re.search(r'<textarea id="search_space"[^>]*aria-describedby="search_space-hint search_space-error"', html)
    assert re.search(r'<textarea id="search_space"[^>]*aria-invalid="true"', html)
    assert re.search(r'id="search_space-error" class="field-error">\s*<p>search_space.neurons.min: must be less', html)
    assert re.search(r'id="max_trials"[^>]*aria-invalid="true"', html)
    assert re.search(r'id="max_trials-error" class="field-error">\s*<p>must be between 1 and', html)
    assert "from-the-form" in html and "&#34;min&#34;: 300" in html  # what was typed comes back
    assert store.list_studies().total == 0 and recorder.calls == []


def test_unparsable_json_and_blank_numbers_are_reported_with_the_other_errors(member: FlaskClient, store) -> None:
    response = post(
        member, "/studies/new", page="/studies/new", **form_values(search_space="{oops", patience="", name="")
    )
    assert response.status_code == 422
    assert "search_space: is not valid JSON" in response.text
    assert re.search(r'id="patience-error" class="field-error">\s*<p>is required', response.text)
    assert re.search(r'id="name-error" class="field-error">\s*<p>is required', response.text)
    assert store.list_studies().total == 0


def test_the_form_submits_a_study_owned_by_the_caller(member: FlaskClient, store: Store, recorder) -> None:
    response = post(member, "/studies/new", page="/studies/new", **form_values(max_trials="3", priority="high"))
    assert response.status_code == 302
    study_id = int(response.headers["Location"].rsplit("/", 1)[1])
    study = store.get_study(study_id)
    assert study.name == "from-the-form" and study.max_trials == 3 and study.priority == "high"
    assert study.team_id == store.get_team("alpha").id and study.owner_id is not None
    assert recorder.calls == [("cpu", 1)]


# -- controls -------------------------------------------------------------------------------------------
def test_pause_resume_priority_and_cancel_buttons(member: FlaskClient, store: Store, submit, recorder) -> None:
    study = submit()
    page = f"/studies/{study.id}"
    assert post(member, f"{page}/pause", page).status_code == 302
    assert store.get_study(study.id).status == "paused"
    assert "Resume" in member.get(page).text
    calls = len(recorder.calls)
    post(member, f"{page}/resume", page)
    assert store.get_study(study.id).status == "queued"
    assert len(recorder.calls) == calls + 1  # resuming wakes workers, as the API does
    post(member, f"{page}/priority", page, priority="low")
    assert store.get_study(study.id).priority == "low"
    post(member, f"{page}/cancel", page)
    assert store.get_study(study.id).status == "cancelled"
    again = post(member, f"{page}/cancel", page)
    assert again.status_code == 302 and "Not cancelled" in member.get(page).text


# -- data sets ------------------------------------------------------------------------------------------
def test_uploading_a_csv_lists_it_and_a_bad_file_is_explained_in_the_page(member: FlaskClient) -> None:
    rows = "\n".join(f"{i},{i * 2},{i % 3}" for i in range(60))
    token = csrf_of(member.get("/datasets").text)
    good = {"file": (io.BytesIO(f"a,b,label\n{rows}\n".encode()), "points.csv"), "target_column": "label"}
    response = member.post("/datasets", data={**good, "csrf_token": token})
    assert response.status_code == 302
    assert "points.csv" in member.get("/datasets").text
    bad = {"file": (io.BytesIO(b"a,b\n1,2\n"), "points.csv"), "target_column": "nope"}
    response = member.post("/datasets", data={**bad, "csrf_token": token})
    assert response.status_code == 422
    assert 'class="field-error"' in response.text and "not stored" in response.text


# -- learning-rate range tests --------------------------------------------------------------------------
def range_form(**changes: str) -> dict[str, str]:
    from tuner_service.dashboard.range_test_form import DEFAULTS

    return {**DEFAULTS, **changes}


def range_test(store: Store, team: str = "alpha", *, result: bool = True) -> int:
    """A range test of ``team`` on digits as a worker leaves it: completed with a curve that dips, then
    diverges (the last loss NaN), and the suggestion read off it by the service's own analysis."""
    from tuner_service.catalog import register_dataset
    from tuner_service.datasets import describe_builtin
    from tuner_service.lr_range import RangeTestSpec, analyse, smooth

    spec = RangeTestSpec.from_json({"dataset": "digits", "task": "multiclass", "min_lr": 1e-4, "steps": 100})
    dataset = register_dataset(store, describe_builtin("digits"))
    job = store.create_job("lr_range_test", spec.to_json(), team_id=store.get_team(team).id, dataset_id=dataset.id)
    if not result:
        return job.id
    rates = [spec.rate(i) for i in range(60)]
    losses = [0.4 + 2.0 * math.exp(-30 * r) + (r / 0.4) ** 3 for r in rates[:-1]] + [math.nan]
    smoothed = smooth(losses, spec.smoothing)
    suggestion = analyse(rates, losses, beta=spec.smoothing)
    curve = [{"lr": r, "loss": x, "smoothed": y} for r, x, y in zip(rates, losses, smoothed, strict=True)]
    store.start_job(job.id, "cpu0")
    store.finish_job(
        job.id, status="completed", result={"steps_run": 60, "curve": curve, "suggestion": suggestion.to_json()}
    )
    return job.id


def test_the_range_test_form_starts_a_test_and_its_page_polls_until_it_is_done(
    member: FlaskClient, store: Store, jobs_sent
) -> None:
    page = member.get("/lr-range-tests")
    assert page.status_code == 200 and 'aria-current="page">LR range tests<' in page.text
    assert re.search(r'<select id="dataset" name="dataset"[^>]*>\s*<option value="builtin:digits" selected', page.text)
    assert 'id="min_lr" name="min_lr" type="text" value="1e-5"' in page.text and "No range test yet" in page.text
    form = range_form(steps="100", hidden_layers="1", neurons="32", optimizer="adam", batch_size="64", max_lr="3")
    response = post(member, "/lr-range-tests", page="/lr-range-tests", **form)
    assert response.status_code == 302
    job_id = int(response.headers["Location"].rsplit("/", 1)[1])
    job = store.get_job(job_id, kind="lr_range_test")
    assert job.status == "queued" and jobs_sent == [("cpu", job_id)]
    assert job.team_id == store.get_team("alpha").id and job.owner_id is not None
    assert job.spec["steps"] == 100 and job.spec["min_lr"] == 1e-5 and job.spec["max_lr"] == 3
    assert job.spec["architecture"] == {
        "hidden_layers": 1, "neurons": 32, "activation": "relu", "optimizer": "adam", "batch_size": 64,
    }  # fmt: skip
    detail = member.get(f"/lr-range-tests/{job_id}").text
    assert f'data-live-url="/lr-range-tests/{job_id}/live.json"' in detail
    assert 'id="range-test-progress" value="0.000" max="1"' in detail and "Waiting for a worker" in detail
    live = member.get(f"/lr-range-tests/{job_id}/live.json").get_json()
    assert live["status"] == "queued" and live["done"] is False and live["figures"] == {}
    assert set(live["html"]) == {"range-test-summary", "range-test-result"}
    store.start_job(job_id, "cpu0")
    store.job_progress(job_id, 0.5)
    live = member.get(f"/lr-range-tests/{job_id}/live.json").get_json()
    assert live["status"] == "running" and live["progress"] == 0.5 and live["done"] is False
    assert 'value="0.500" max="1"' in live["html"]["range-test-summary"]
    listing = member.get("/lr-range-tests")
    assert f'id="range-test-row-{job_id}"' in listing.text and "digits" in listing.text
    assert 'data-live-url="/lr-range-tests/live.json"' in listing.text
    rows = member.get("/lr-range-tests/live.json").get_json()
    assert f"range-test-row-{job_id}" in rows["html"]["range-test-rows"] and rows["done"] is False


def test_a_completed_range_test_plots_loss_against_a_log_rate_axis_with_the_suggestion(
    member: FlaskClient, store: Store
) -> None:
    job_id = range_test(store)
    suggestion = store.get_job(job_id).result["suggestion"]
    html = member.get(f"/lr-range-tests/{job_id}").text
    assert "data-live-url" not in html  # nothing left to poll
    assert re.search(r'id="chart-lr" role="img" aria-label="Line chart of the training loss[^"]{40,}"', html)
    figures = json.loads(re.search(r'id="figures-data">(.*?)</script>', html, re.S).group(1))
    assert '"type": "log"' in json.dumps(figures["chart-lr"]["figure"]["layout"]["xaxis"])
    data = figures["chart-lr"]["figure"]["data"]
    assert [t["name"] for t in data[:2]] == ["loss (each batch)", "smoothed loss"]
    assert data[0]["y"][-1] is None  # the NaN of the diverged batch is a gap, and the JSON stays parsable
    markers = {t["name"].split(" ")[0]: t["x"] for t in data[2:]}
    assert markers == {
        "suggested": [suggestion["suggested_lr"]] * 2,
        "diverged": [suggestion["diverged_lr"]] * 2,
    }
    assert f'id="suggested-lr">{suggestion["suggested_lr"]:.3g}<' in html
    assert f"{suggestion['diverged_lr']:.3g}" in html and f"{suggestion['min_loss_lr']:.3g}" in html
    assert "How it is chosen: the rate at the smoothed loss minimum" in html
    assert f"{{&#34;lr_range_test&#34;: {job_id}, &#34;factor&#34;: 10}}" in html  # how a study uses it
    live = member.get(f"/lr-range-tests/{job_id}/live.json").get_json()
    assert live["done"] is True and live["suggestion"]["suggested_lr"] == suggestion["suggested_lr"]
    assert live["figures"]["chart-lr"]["figure"]["layout"]["xaxis"]["type"] == "log"
    assert "chart-lr" in live["html"]["range-test-result"]
    listing = member.get("/lr-range-tests").text
    assert f"<strong>{suggestion['suggested_lr']:.3g}</strong>" in listing and "data-live-url" not in listing


def test_a_bad_range_is_shown_next_to_its_field_and_nothing_is_stored(
    member: FlaskClient, store: Store, jobs_sent
) -> None:
    form = range_form(min_lr="1", max_lr="0.01", steps="", neurons="lots")
    response = post(member, "/lr-range-tests", page="/lr-range-tests", **form)
    assert response.status_code == 422
    html = response.text
    assert re.search(r'<input id="min_lr"[^>]*aria-describedby="min_lr-hint min_lr-error" aria-invalid="true"', html)
    assert re.search(r'id="min_lr-error" class="field-error">\s*<p>must be less than max_lr \(0.01\)', html)
    assert re.search(r'id="steps-error" class="field-error">\s*<p>is required', html)
    assert re.search(r'id="neurons-error" class="field-error">\s*<p>must be a whole number', html)
    assert 'id="max_lr" name="max_lr" type="text" value="0.01"' in html  # what was typed comes back
    assert "The range test was not started: 3 problem(s)" in html
    wrong_task = post(member, "/lr-range-tests", page="/lr-range-tests", **range_form(dataset="builtin:diabetes"))
    assert wrong_task.status_code == 422
    assert re.search(r'id="task_type-error" class="field-error">\s*<p>a multiclass task needs', wrong_task.text)
    assert store.list_jobs(kind="lr_range_test") == [] and jobs_sent == []


def test_another_teams_range_test_is_404_and_a_viewer_cannot_start_one(
    app: Flask, store: Store, member: FlaskClient, jobs_sent
) -> None:
    make_token(store, "bob", team="beta")
    theirs = range_test(store, team="beta")
    for path in (f"/lr-range-tests/{theirs}", f"/lr-range-tests/{theirs}/live.json"):
        assert member.get(path).status_code == 404, path
    assert f"range-test-row-{theirs}" not in member.get("/lr-range-tests").text
    assert member.get("/lr-range-tests/999").status_code == 404
    viewer = sign_in(app.test_client(), make_token(store, "vic", team="beta", role="viewer"))
    page = viewer.get("/lr-range-tests")
    assert page.status_code == 200 and f"range-test-row-{theirs}" in page.text
    assert 'id="start-range-test"' not in page.text  # no form to fill in for nothing
    assert viewer.get(f"/lr-range-tests/{theirs}").status_code == 200
    assert post(viewer, "/lr-range-tests", page="/lr-range-tests", **range_form()).status_code == 403
    assert len(store.list_jobs(kind="lr_range_test")) == 1 and jobs_sent == []


# -- reruns and the environment on the trial page ---------------------------------------------------------
def test_the_trial_page_shows_the_recorded_environment(member: FlaskClient, store: Store, submit) -> None:
    study = submit()
    done, failed = add_trials(store, study.id, [RESULTS[0], RESULTS[-1]])
    html = member.get(f"/studies/{study.id}/trials/{done}").text
    table = re.search(r'<table class="data compact" id="environment-table">.*?</table>', html, re.S).group(0)
    for key, value in ENVIRONMENT.items():
        assert re.search(rf'<th scope="row">{key}</th><td><code>{value}</code>', table), key
    assert "Not recorded" in member.get(f"/studies/{study.id}/trials/{failed}").text


def test_the_rerun_form_creates_a_job_and_the_page_shows_its_result(
    member: FlaskClient, store: Store, submit, jobs_sent
) -> None:
    study = submit()
    trial_id, failed_id = add_trials(store, study.id, [RESULTS[1], RESULTS[-1]])
    page = f"/studies/{study.id}/trials/{trial_id}"
    html = member.get(page).text
    assert 'id="rerun-trial"' in html and "No rerun yet" in html and "data-live-url" not in html
    assert 'id="rerun-trial"' not in member.get(f"/studies/{study.id}/trials/{failed_id}").text  # not finished
    bad = post(member, f"{page}/rerun", page, repeats="11")
    assert bad.status_code == 422
    assert re.search(r'id="repeats"[^>]*value="11"[^>]*aria-describedby="repeats-hint repeats-error"', bad.text)
    assert re.search(r'id="repeats-error" class="field-error">\s*<p>must be an integer between 1 and 10', bad.text)
    assert store.list_jobs(kind="rerun") == [] and jobs_sent == []
    response = post(member, f"{page}/rerun", page, repeats="2")
    assert response.status_code == 302 and response.headers["Location"].startswith(page)
    [job] = store.list_jobs(kind="rerun", trial_id=store.trial_by_number(study.id, trial_id).id)
    assert job.spec == {"repeats": 2} and job.study_id == study.id and jobs_sent == [("cpu", job.id)]
    assert job.status == "queued" and job.owner_id is not None
    html = member.get(page).text
    assert f"Rerun #{job.id} queued" in html and f'id="rerun-row-{job.id}"' in html
    assert f'data-live-url="{page}/live.json"' in html  # the rerun is watched until it is done
    live = member.get(f"{page}/live.json").get_json()
    assert live["done"] is False and f"rerun-row-{job.id}" in live["html"]["trial-reruns"]
    store.start_job(job.id, "cpu0")
    store.finish_job(
        job.id,
        status="completed",
        result={
            "objective": "val_accuracy",
            "original": {"seed": 1234, "score": 0.9, "environment": ENVIRONMENT},
            "same_seed": {"seed": 1234, "score": 0.9, "best_epoch": 1},
            "reproduced": True,
            "other_seeds": [{"seed": 1, "score": 0.86, "best_epoch": 2}, {"seed": 2, "score": 0.88, "best_epoch": 1}],
            "spread": {"mean": 0.87, "std": 0.01414, "min": 0.86, "max": 0.88},
            "environment": {**ENVIRONMENT, "device": "0"},
        },
    )
    live = member.get(f"{page}/live.json").get_json()
    assert live["done"] is True
    row = re.search(rf'<tr id="rerun-row-{job.id}">.*?</tr>', live["html"]["trial-reruns"], re.S).group(0)
    assert '0.9 <span class="muted">seed 1234</span>' in row and 'class="reproduced-yes">yes<' in row
    assert "0.87 ± 0.01414" in row and "(0.86–0.88, 2 seeds)" in row
    assert "device cpu → 0" in row  # what changed between the original and the rerun
    assert "data-live-url" not in member.get(page).text


def test_rerunning_is_for_members_of_the_trials_team(app: Flask, store: Store, member: FlaskClient, submit) -> None:
    make_token(store, "bob", team="beta")
    theirs = submit(team="beta")
    [their_trial] = add_trials(store, theirs.id, RESULTS[:1])
    assert post(member, f"/studies/{theirs.id}/trials/{their_trial}/rerun", repeats="1").status_code == 404
    ours = submit()
    [trial_id] = add_trials(store, ours.id, RESULTS[:1])
    viewer = sign_in(app.test_client(), make_token(store, "vic", team="alpha", role="viewer"))
    page = f"/studies/{ours.id}/trials/{trial_id}"
    assert 'id="rerun-trial"' not in viewer.get(page).text
    assert post(viewer, f"{page}/rerun", repeats="1").status_code == 403
    assert store.list_jobs(kind="rerun") == []


# -- offline and accessible -----------------------------------------------------------------------------
class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


def every_page(member: FlaskClient, store: Store, submit) -> dict[str, str]:
    study = submit(max_trials=5)
    ids = add_trials(store, study.id, RESULTS)
    paths = [*PAGES, f"/studies/{study.id}", f"/studies/{study.id}/trials/{ids[0]}", "/signout"]
    paths += [f"/lr-range-tests/{range_test(store)}", f"/lr-range-tests/{range_test(store, result=False)}"]
    pages = {path: member.get(path).text for path in paths}
    pages["/signin"] = member.application.test_client().get("/signin").text
    return pages


def test_no_page_loads_anything_from_another_host(member: FlaskClient, store: Store, submit) -> None:
    for path, html in every_page(member, store, submit).items():
        for tag, attrs in tags_of(html):
            for key in ("src", "href", "action", "data"):
                value = attrs.get(key) or ""
                assert not value.startswith(("http://", "https://", "//")), (path, tag, value)
        assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(https?:)?//", html), path


def test_plotly_and_the_dashboards_assets_are_served_with_caching_headers(member: FlaskClient) -> None:
    html = member.get("/").text
    for url in re.findall(r'(?:src|href)="(/assets/[^"]+)"', html):
        response = member.get(url)
        assert response.status_code == 200 and "max-age=31536000" in response.headers["Cache-Control"]
    study_page = member.get("/studies/new").text
    assert "plotly" not in study_page  # only pages with charts load it
    from tuner_service.dashboard.assets import plotly_js

    version = plotly_js()[1]
    response = member.get(f"/assets/vendor/plotly-{version}.min.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert "max-age=31536000" in response.headers["Cache-Control"] and len(response.data) > 1_000_000
    assert member.get("/assets/x/../../session.py").status_code == 404


def test_every_form_control_has_a_label_and_tables_have_captions(member: FlaskClient, store: Store, submit) -> None:
    for path, html in every_page(member, store, submit).items():
        tags = tags_of(html)
        labelled = {attrs.get("for") for tag, attrs in tags if tag == "label"}
        for tag, attrs in tags:
            if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden":
                has_name = attrs.get("id") in labelled or attrs.get("aria-label")
                assert has_name, f"{path}: <{tag} {attrs}> has no label"
        assert html.count("<table") == html.count("<caption"), path
        assert "<th>" not in html, f"{path}: a header cell without scope"
        for _tag, attrs in tags:
            if "chart" in (attrs.get("class") or "").split():
                assert attrs.get("role") == "img" and len(attrs.get("aria-label") or "") > 20, (path, attrs)


@pytest.mark.slow
def test_the_keras_tuner_snippet_builds_a_compiled_model() -> None:
    """The page's snippet is real code: it runs, with keras_tuner, and builds the service's MLP."""
    keras_tuner = pytest.importorskip("keras_tuner")
    from tuner_service.dashboard.snippet import keras_tuner_snippet

    values = {"hidden_layers": 2, "neurons": 24, "learning_rate": 0.003, "optimizer": "sgd", "momentum": 0.5}
    task = {"type": "multiclass", "architecture": "wide_deep", "metrics": ["accuracy"]}
    source = keras_tuner_snippet({**values, "tuner/epochs": 3}, task, n_features=64, n_outputs=10, title="t\nx = 1")
    namespace: dict = {}
    exec(compile(source, "snippet.py", "exec"), namespace)  # noqa: S102 - our own generated code
    hp = keras_tuner.HyperParameters()
    model = namespace["build_model"](hp)
    assert hp.values == values
    assert model.output_shape == (None, 10) and model.optimizer.__class__.__name__ == "SGD"


def test_a_signed_in_session_may_read_the_api_but_not_write(app: Flask, store: Store, member_token: str) -> None:
    """The nav's API link works in the browser; a write by cookie alone would be open to CSRF, so it is refused."""
    browser = sign_in(app.test_client(), member_token)
    assert browser.get("/api/v1/docs").status_code == 200
    assert browser.get("/api/v1/studies").status_code == 200
    write = browser.post("/api/v1/studies", json={"name": "x"})
    assert write.status_code == 401 and write.mimetype == "application/problem+json"
    store.revoke_token(member_token)
    assert browser.get("/api/v1/studies").status_code == 401  # revoking the token ends API reads too
    assert app.test_client().get("/api/v1/studies").status_code == 401
