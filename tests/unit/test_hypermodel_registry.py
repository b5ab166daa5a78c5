"""A study's hypermodel against the announced registry (pure Python): narrowing, fixing, undeclared names,
the TUNER_HYPERMODELS setting, and image uploads that keep their shape."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tuner_service.datasets import ingest_upload
from tuner_service.errors import InvalidInput
from tuner_service.hypermodels import ENTRY_POINT_GROUP, discover, resolve_space
from tuner_service.hypermodels.discovery import parse_setting
from tuner_service.hypermodels.registry import ModelRef

DECLARED = {
    "conv_blocks": {"type": "int", "min": 1, "max": 2},
    "filters": {"type": "int", "min": 8, "max": 32, "step": 8, "default": 16},
    "dropout": {"type": "float", "min": 0.0, "max": 0.5, "default": 0.25},
    "pool": {"type": "choice", "values": ["max", "avg"], "condition": {"parent": "conv_blocks", "values": [2]}},
}


def test_an_override_narrows_and_the_rest_stay_tuned_by_default() -> None:
    space = resolve_space(
        DECLARED, {"filters": {"type": "choice", "values": [8, 16]}}, tune_new_entries=True, hypermodel="cnn"
    ).to_json()
    assert list(space) == list(DECLARED)
    assert space["filters"] == {"type": "choice", "values": [8, 16]}
    assert space["dropout"]["type"] == "float" and space["pool"]["condition"]["parent"] == "conv_blocks"


def test_without_tune_new_entries_what_the_study_does_not_name_is_fixed_at_its_default() -> None:
    space = resolve_space(
        DECLARED,
        {"dropout": {"type": "float", "min": 0.0, "max": 0.2}},
        tune_new_entries=False,
        hypermodel="cnn",
    ).to_json()
    assert space["conv_blocks"] == {"type": "fixed", "value": 1}
    assert space["filters"] == {"type": "fixed", "value": 16}
    assert space["dropout"]["max"] == 0.2
    assert "pool" not in space  # only reachable with two conv blocks, and conv_blocks is fixed at 1
    narrowed = resolve_space(
        DECLARED, {"conv_blocks": {"type": "fixed", "value": 2}}, tune_new_entries=False, hypermodel="cnn"
    ).to_json()
    assert narrowed["pool"] == {"type": "fixed", "value": "max", "condition": {"parent": "conv_blocks", "values": [2]}}


def test_a_parameter_the_hypermodel_does_not_declare_names_its_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        resolve_space(DECLARED, {"kernel": {"type": "int", "min": 3}}, tune_new_entries=True, hypermodel="cnn")
    (error,) = caught.value.errors
    assert error.field == "search_space.kernel" and "conv_blocks" in error.reason


def test_hypermodel_names_keep_their_own_meaning_for_names_the_mlp_also_reads() -> None:
    # "optimizer" and "activation" are checked against the MLP's lists only for the MLP.
    space = resolve_space(
        {"optimizer": {"type": "choice", "values": ["lion", "adam"]}}, None, tune_new_entries=True, hypermodel="x"
    )
    assert space.to_json()["optimizer"]["values"] == ["lion", "adam"]


def test_model_ref_reads_a_name_or_an_object_and_reports_bad_fields() -> None:
    errors: list = []
    assert ModelRef.from_json("mnist_cnn", errors) == ModelRef("mnist_cnn", True)
    assert ModelRef.from_json(None, errors).is_builtin_mlp and errors == []
    ModelRef.from_json({"hypermodel": 3, "tune_new_entries": "no", "extra": 1}, errors)
    assert sorted(e.field for e in errors) == ["model.extra", "model.hypermodel", "model.tune_new_entries"]


def test_the_setting_adds_hypermodels_and_rejects_malformed_items() -> None:
    names = {e.name: e.target for e in discover("quick=example_hypermodels.wide_deep:build_model")}
    assert names["mlp"] == "tuner_service.hypermodels.mlp:MLPHyperModel"
    assert names["quick"] == "example_hypermodels.wide_deep:build_model"
    with pytest.raises(InvalidInput) as caught:
        parse_setting("ok=a.b:c, broken, x=nocolon")
    assert [e.field for e in caught.value.errors] == ["TUNER_HYPERMODELS[1]", "TUNER_HYPERMODELS[2]"]
    assert ENTRY_POINT_GROUP == "tuner_service.hypermodels"


@pytest.mark.parametrize(("shape", "expected"), [((30, 6, 5), [6, 5, 1]), ((30, 6, 5, 3), [6, 5, 3]), ((30, 4), None)])
def test_an_npz_upload_of_images_keeps_its_image_shape(tmp_path, shape, expected) -> None:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.integers(0, 255, size=shape).astype(np.uint8), y=rng.integers(0, 3, size=shape[0]))
    info = ingest_upload(buffer.getvalue(), "img.npz", tmp_path, max_bytes=10**7)
    assert info.n_features == int(np.prod(shape[1:]))
    assert (list(info.image_shape) if info.image_shape else None) == expected


def test_upload_splits_are_memory_mapped_and_kept_apart_per_target_column(tmp_path) -> None:
    from tuner_service.datasets import load_split

    rows = [f"{i},{i % 2},{i * 1.5}" for i in range(40)]
    data = ("a,b,c\n" + "\n".join(rows)).encode()
    by_b = ingest_upload(data, "t.csv", tmp_path, target_column="b", max_bytes=10**6)
    by_c = ingest_upload(data, "t.csv", tmp_path, target_column="c", max_bytes=10**6)
    split_b, split_c = load_split(by_b, tmp_path), load_split(by_c, tmp_path)
    assert isinstance(split_b.x_train, np.memmap) and not split_b.x_train.flags.writeable
    assert split_b.x_train.shape == (32, 2) and split_c.x_train.shape == (32, 2)
    assert set(np.unique(split_b.y_train)) <= {0.0, 1.0} and split_c.y_train.max() > 1
    assert len(list((tmp_path / "datasets" / "splits").iterdir())) == 2
