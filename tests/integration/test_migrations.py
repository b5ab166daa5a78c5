"""The shipped Alembic migrations: upgrade an empty database, downgrade to nothing, upgrade again."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from tuner_service.store.engine import make_engine
from tuner_service.store.migrate import current, downgrade, upgrade
from tuner_service.store.models import Base

pytestmark = pytest.mark.integration
TABLES = {"datasets", "studies", "trials", "epochs", "teams", "users", "tokens", "jobs", "worker_hypermodels"}


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def indexes(url: str, table: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {ix["name"] for ix in inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    assert tables(empty_url) == set()
    upgrade(empty_url)
    assert current(empty_url) is not None
    assert tables(empty_url) == TABLES
    assert {"ix_trials_study_board", "ix_trials_study_ranked", "ix_trials_dataset_ranked"} <= indexes(
        empty_url, "trials"
    )
    downgrade(empty_url, "base")
    assert current(empty_url) is None
    assert tables(empty_url) == set()
    upgrade(empty_url)
    assert tables(empty_url) == TABLES


def test_migrations_match_the_models(empty_url: str) -> None:
    """Autogenerate finds nothing to do: the revisions and models.py describe the same schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_upgrading_a_database_with_studies_keeps_them(empty_url: str) -> None:
    """0001 -> head on a database holding a study and a trial: rows survive, new columns get defaults."""
    from sqlalchemy import text

    from tuner_service.proposals import config_hash

    upgrade(empty_url, "0001")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO datasets (id, key, name, source, info, created_at) "
                    "VALUES (1, 'builtin:digits', 'digits', 'builtin', '{}', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO studies (id, name, status, dataset_id, task_type, algorithm, objective_name, "
                    "direction, max_trials, parallelism, priority, spec, created_at) VALUES (1, 's', 'completed', "
                    "1, 'multiclass', 'random', 'val_accuracy', 'max', 1, 1, 'normal', '{}', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO trials (id, study_id, number, oracle_trial_id, ticket, status, hyperparameters, "
                    "dataset_id, objective_name, epochs_run, retries, stop_requested, created_at) VALUES "
                    "(1, 1, 0, '0', 't', 'completed', "
                    '\'{"units": 32, "tuner/rung": 1, "tuner/trial_id": "07"}\', '
                    "1, 'val_accuracy', 3, 0, false, CURRENT_TIMESTAMP)"
                )
            )
            for id_, number, oracle_id, resumed in ((2, 1, "07", "99"), (3, 2, "08", "07")):  # 3 resumes 2
                conn.execute(
                    text(
                        "INSERT INTO trials (id, study_id, number, oracle_trial_id, ticket, status, hyperparameters,"
                        " dataset_id, objective_name, epochs_run, retries, stop_requested, created_at) VALUES "
                        f"({id_}, 1, {number}, '{oracle_id}', 't{id_}', 'completed', "
                        f'\'{{"units": 16, "tuner/rung": 0, "tuner/trial_id": "{resumed}"}}\', '
                        "1, 'val_accuracy', 1, 0, false, CURRENT_TIMESTAMP)"
                    )
                )
        upgrade(empty_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pool, team_id FROM studies")).one() == ("cpu", None)
            assert conn.execute(text("SELECT pool, ticket FROM trials WHERE id = 1")).one() == ("cpu", "t")
            # 0013 gives existing trials the digest a claim compares drawn configurations with, and their rung.
            first = text("SELECT config_hash, rung, resumes FROM trials WHERE id = 1")
            digest, rung, resumes = conn.execute(first).one()
            assert digest == config_hash({"units": 32, "tuner/epochs": 3}) == config_hash({"units": 32})
            assert (rung, resumes) == (1, "07")
            # 0014 flags the trials another trial of their study resumes (trial "07" twice over: 1 and 3).
            flags = conn.execute(text("SELECT oracle_trial_id, promoted FROM trials ORDER BY id")).all()
            assert [(oracle_id, bool(flag)) for oracle_id, flag in flags] == [("0", False), ("07", True), ("08", False)]
    finally:
        engine.dispose()
