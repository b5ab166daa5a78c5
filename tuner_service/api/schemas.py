"""Schemas of what the API answers, and the components of the OpenAPI document.

Request bodies come from the models that validate them (:mod:`tuner_service.contract`); the answers are
described here by pydantic models too, each naming the fields a client relies on (more may be present).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from tuner_service.contract import REQUEST_MODELS

REF = "#/components/schemas/{model}"


class Answer(BaseModel):
    """An answer object: the fields listed are always there; others may be added."""

    model_config = ConfigDict(extra="allow")


class Problem(Answer):
    """An RFC 9457 problem; ``errors`` names each field at fault."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[dict[str, str]] | None = None


class Progress(Answer):
    budget: int
    done: int
    percent: float
    trials: dict[str, int]
    eta_s: float | None


class StudyLinks(Answer):
    self: str
    trials: str
    leaderboard: str
    best_model: str


class StudyOut(Answer):
    id: int
    name: str
    status: Literal["queued", "running", "paused", "completed", "cancelled", "failed"]
    dataset_id: int
    task_type: str
    algorithm: str
    priority: str
    best_trial_id: int | None
    best_score: float | None
    spec: dict[str, Any]
    progress: Progress
    links: StudyLinks


class TrialOut(Answer):
    id: int
    study_id: int
    number: int
    status: str
    hyperparameters: dict[str, Any]
    score: float | None
    has_model: bool


class TrialDetail(TrialOut):
    epochs: list[dict[str, Any]]


class DatasetOut(Answer):
    id: int
    key: str
    name: str
    source: str
    info: dict[str, Any]


class JobOut(Answer):
    id: int
    kind: Literal["lr_range_test", "rerun"]
    status: str
    progress: float
    spec: dict[str, Any]
    result: dict[str, Any] | None


class _Page(Answer):
    total: int = Field(ge=0)
    limit: int
    offset: int


class StudyPage(_Page):
    items: list[StudyOut]


class TrialPage(_Page):
    items: list[TrialOut]


class DatasetPage(_Page):
    items: list[DatasetOut]
    builtin: list[str]


class LeaderboardPage(_Page):
    items: list[dict[str, Any]]


class JobList(Answer):
    items: list[JobOut]
    total: int


class QueueOut(Answer):
    running: list[dict[str, Any]]
    waiting: list[dict[str, Any]]
    teams: list[dict[str, Any]]


class UserOut(Answer):
    id: int
    name: str
    team: str
    role: str


class UserList(Answer):
    items: list[UserOut]
    total: int


class TokenOut(Answer):
    secret: str = Field(description="shown this once")
    prefix: str
    user: str
    label: str | None
    expires_at: str | None


class Health(Answer):
    status: Literal["ok", "unavailable"]
    database: str


class HypermodelOut(Answer):
    name: str
    pool: str
    package: str | None
    version: str | None
    search_space: dict[str, Any] | None
    input_kinds: list[str]
    live: bool
    error: str | None


class HypermodelList(Answer):
    items: list[HypermodelOut]
    builtin: str = Field(description="the built-in hypermodel every worker runs")


class DatasetUpload(BaseModel):
    """multipart/form-data: ``file`` (.npz with arrays x, y, or .csv with a header) and ``target_column``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"required": ["file"]})

    file: bytes = Field(json_schema_extra={"format": "binary", "type": "string"})
    target_column: str | None = Field(None, min_length=1, max_length=200)


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Problem, StudyOut, StudyPage, TrialDetail, TrialPage, DatasetOut, DatasetPage, LeaderboardPage, JobOut,
    JobList, QueueOut, UserOut, UserList, TokenOut, Health, HypermodelList, DatasetUpload,
)  # fmt: skip


def component_schemas() -> dict[str, Any]:
    """Every schema the document refers to, generated from the models."""
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (model, "validation") for model in (*REQUEST_MODELS.values(), *RESPONSE_MODELS)
    ]
    _, top = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    upload = schemas["DatasetUpload"]
    upload["properties"]["file"] = {"type": "string", "format": "binary"}
    return schemas


def components() -> dict[str, Any]:
    return {
        "schemas": component_schemas(),
        "responses": {
            "Problem": {
                "description": "An RFC 9457 problem",
                "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}},
            }
        },
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API token: tuner-service token create"},
        },
    }
