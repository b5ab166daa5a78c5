"""The OpenAPI document is generated from the models that validate request bodies, and says what the
server does: enums, bounds, closed objects, typed parameters, every answer a route can give."""

from __future__ import annotations

from tests.api.test_bad_input import assert_problem
from tests.conftest import digits_study
from tuner_service.api.schemas import component_schemas
from tuner_service.contract import REQUEST_MODELS, Study


def document(client) -> dict:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_request_schemas_are_the_validating_models(client) -> None:
    schemas = document(client)["components"]["schemas"]
    generated = component_schemas()
    for name in REQUEST_MODELS:
        assert schemas[name] == generated[name], name
    assert set(schemas["Study"]["properties"]) == set(Study.model_fields)


def test_the_schema_is_as_strict_as_the_server(client) -> None:
    schemas = document(client)["components"]["schemas"]
    study = schemas["Study"]
    assert study["additionalProperties"] is False
    # search_space is required for the built-in MLP only (a named hypermodel declares its own): the server says so
    assert set(study["required"]) == {"name", "dataset", "task"}
    assert "search_space" in study["properties"]
    algorithm_names = schemas["Algorithm"]["properties"]["name"]["enum"]
    assert {"random", "grid", "bayesian", "hyperband", "asha", "tpe"} == set(algorithm_names)
    assert study["properties"]["max_trials"]["maximum"] == 10_000
    for name in ("Task", "IntParam", "FloatParam", "ChoiceParam", "Pruner", "Resources", "Algorithm", "Model"):
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["Task"]["properties"]["scale_target"]["anyOf"][0] == {"type": "boolean"}
    assert schemas["Algorithm"]["properties"]["initial_points"]["anyOf"][0] == {"minimum": 1, "type": "integer"}


def test_every_operation_documents_its_answers_parameters_and_security(client) -> None:
    doc = document(client)
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token: tuner-service token create",
    }
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            codes = set(op["responses"])
            if path.startswith("/api/v1"):
                assert {"400", "401", "429", "503"} <= codes, (method, path)
                if "{" in path:
                    assert "404" in codes, (method, path)
                if "requestBody" in op:
                    assert {"403", "413", "415", "422"} <= codes, (method, path)
            else:
                assert op["security"] == []
            for parameter in op["parameters"]:
                assert parameter["schema"].get("type") in ("integer", "string"), (path, parameter)
            success = [r for code, r in op["responses"].items() if code.startswith("2") and code != "204"]
            assert all("content" in r for r in success), (method, path)
    studies = doc["paths"]["/api/v1/studies"]["get"]
    limit = next(p for p in studies["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 500}
    status = next(p for p in studies["parameters"] if p["name"] == "status")
    assert "paused" in status["schema"]["enum"]
    links = doc["paths"]["/api/v1/studies"]["post"]["responses"]["201"]["links"]
    assert links["ListTrials"]["operationId"] == "studies_trials"


def test_the_server_refuses_what_the_schema_refuses(client, footprint) -> None:
    """The domain validators take any non-negative seed; the contract holds it to an exact JSON integer."""
    before = footprint()
    response = client.post("/api/v1/studies", json=digits_study(validation={"fraction": 0.2, "seed": 2**60}))
    assert_problem(response, 422, ("validation.seed",))
    assert footprint() == before


def test_an_unknown_query_parameter_is_named(client) -> None:
    response = client.get("/api/v1/studies?stauts=running")
    body = assert_problem(response, 400, ("stauts",))
    assert "known: dataset, limit, offset, status" in body["detail"]
