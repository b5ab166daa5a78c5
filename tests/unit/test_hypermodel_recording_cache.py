"""A worker start reuses a hypermodel's recorded space while the hypermodel is unchanged (recording builds
models), and records again once its module file changes."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from pathlib import Path

MODULE = """
import keras

BUILDS = []


def build_model(hp):
    BUILDS.append(1)
    units = hp.Int("units", 8, 32)
    hidden = keras.layers.Dense(units, activation="relu")
    model = keras.Sequential([hidden, keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
"""


def test_a_recording_is_reused_until_the_hypermodel_changes(tmp_path: Path, monkeypatch) -> None:
    from tuner_service.hypermodels.runtime import offers

    package = tmp_path / "pkg"
    package.mkdir()
    source = package / "cache_probe_model.py"
    source.write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(package))
    module = importlib.import_module("cache_probe_model")
    setting = "probe=cache_probe_model:build_model"
    cache = tmp_path / "cache"

    def recorded() -> dict:
        [offer] = [o for o in offers(setting, cache_dir=cache) if o.entry.name == "probe"]
        assert offer.error is None, offer.error
        return offer.search_space

    first = recorded()
    built = len(module.BUILDS)
    assert built > 0 and first["units"]["max"] == 32
    assert recorded() == first and len(module.BUILDS) == built, "the second start must reuse the recording"
    assert len(list((cache / "hypermodels").glob("*.json"))) >= 1

    source.write_text(textwrap.dedent(MODULE).replace('hp.Int("units", 8, 32)', 'hp.Int("units", 8, 64)'))
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later edit, even within one tick
    sys.modules.pop("cache_probe_model")
    module = importlib.import_module("cache_probe_model")
    assert recorded()["units"]["max"] == 64 and module.BUILDS, "a changed module is recorded again"
