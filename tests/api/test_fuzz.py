"""The served OpenAPI document is the contract: schemathesis generates requests from it (valid ones and,
for every operation, invalid ones) against the app in-process on a real SQLite store with a member's token,
and every check must pass: no server error, no status code or content type the document does not list,
every answer matching its schema, invalid requests refused.

Budget: ``MAX_EXAMPLES`` generated requests per operation and phase, with a fixed seed (so a failure
reproduces). A schema-valid request may still be refused with 404 (an id no row has), 409 (a state that
does not allow it) or 422: the checks the schema cannot state (a range's min below its max, the data set
named existing and fitting the task, a condition's parent defined earlier) are the domain validators'; what
must never happen to it is 400, 413 or 415, i.e. the server calling malformed what the document calls valid.
"""

from __future__ import annotations

from collections import Counter

import hypothesis
import hypothesis.stateful
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from tests.conftest import make_token
from tuner_service.api import create_app

MAX_EXAMPLES = 12
SEED = 20261130
CONFIG = {
    "seed": SEED,
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]},
    },
}


def fuzzed_app(settings, store):  # noqa: ANN001, ANN201
    # The auth checks send bad tokens on purpose; the throttle that would answer them 429 has its own tests.
    unthrottled = settings.with_overrides(auth_failures_per_minute=10**9)
    return create_app(unthrottled, store=store, enqueue=lambda pool, count: None, enqueue_job=lambda pool, job: None)


def served_schema(app, token: str):  # noqa: ANN001, ANN201
    """The document as the app serves it, the token declared as the bearer scheme's credentials (so the
    auth checks can also send requests without it or with a wrong one)."""
    config = SchemathesisConfig.from_dict({**CONFIG, "auth": {"openapi": {"bearer": {"bearer": token}}}})
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config, headers=headers)
    return schema.exclude(path="/api/v1/docs")  # an HTML page: nothing to generate


def fuzz(operation, mode: GenerationMode, auth: dict[str, str], statuses: list[tuple[str, int]]) -> None:  # noqa: ANN001
    """MAX_EXAMPLES requests of one mode to one operation, every check run on each answer."""
    # Invalid requests carry the token explicitly: negation would otherwise spoil the credentials too, and
    # every one would stop at 401 instead of reaching the checks of its parameters and body.
    headers = auth if mode is GenerationMode.NEGATIVE else None

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def run(case) -> None:  # noqa: ANN001
        statuses.append((mode.value, case.call_and_validate(headers=headers).status_code))

    run()


def test_every_operation_keeps_the_contract(settings, store) -> None:
    """Each operation gets MAX_EXAMPLES schema-valid and MAX_EXAMPLES invalid requests; every failure of
    every operation is collected, then reported together."""
    token = make_token(store, "fuzzer")
    auth = {"Authorization": f"Bearer {token}"}
    schema = served_schema(fuzzed_app(settings, store), token)
    failures: list[str] = []
    statuses: list[tuple[str, int]] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, auth, statuses)
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to make invalid: no parameter and no body (GET /healthz)
            except Exception as exc:  # every check failure of this operation and mode, reported at the end
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    print(f"schemathesis sent {len(statuses)} requests: {sorted(Counter(statuses).items())}")
    assert not failures, "\n\n".join(failures)
    assert len(statuses) >= 300  # the budget was spent, not skipped
    valid = [status for mode, status in statuses if mode == "positive"]
    assert 401 not in valid and sum(200 <= s < 300 for s in valid) >= 30  # signed in: valid requests got through


STATEFUL_RUNS = 6
STATEFUL_STEPS = 6


def test_following_links_keeps_the_contract(settings, store) -> None:
    """Stateful: sequences of calls that follow the document's links (a created study to its trials and
    leaderboard, an upload to its data set, a range test to its status), every answer checked."""
    token = make_token(store, "fuzzer")
    app = fuzzed_app(settings, store)
    schema = served_schema(app, token)

    hypothesis.stateful.run_state_machine_as_test(
        schema.as_state_machine(),
        settings=hypothesis.settings(
            max_examples=STATEFUL_RUNS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        ),
    )
