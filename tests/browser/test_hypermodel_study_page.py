"""A study of an installed hypermodel on the dashboard: its page shows the snippet that builds that hypermodel."""

from __future__ import annotations

import html

from tests.browser.conftest import add_trials
from tuner_service.study import submit_study


def test_a_hypermodel_study_page_shows_the_snippet_of_its_hypermodel(member, store, settings, recorder) -> None:
    space = {
        "filters_0": {"type": "int", "min": 8, "max": 32, "step": 8},
        "batch_size": {"type": "choice", "values": [32, 64]},
    }
    offer = {"name": "cnn", "package": "pkg", "version": "2.0", "target": "pkg.cnn:CNN", "search_space": space}
    store.announce_hypermodels("w0", "cpu", [{**offer, "input_kinds": ["images"]}])
    doc = {
        "name": "cnn-page",
        "dataset": "builtin:digits_images",
        "task": "multiclass",
        "model": {"hypermodel": "cnn"},
        "max_trials": 2,
    }
    study = submit_study(store, settings, doc, recorder, team_id=store.get_team("alpha").id)
    add_trials(store, study.id, [({"filters_0": 16, "batch_size": 64}, 0.9), ({"filters_0": 8, "batch_size": 32}, 0.7)])
    page = html.unescape(member.get(f"/studies/{study.id}").text)
    assert "from pkg.cnn import CNN" in page and "hypermodel 'cnn' from pkg 2.0" in page
    assert "hp.values.update({'filters_0': 16, 'batch_size': 64})" in page
    assert "'input_shape': (8, 8, 1), 'num_classes': 10" in page
