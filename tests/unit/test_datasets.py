"""Tests for tuner_service.datasets: built-in sets, uploads, task checks, splits and Keras file loaders."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest

from tuner_service import datasets
from tuner_service.datasets import (
    BUILTIN_NAMES,
    DatasetInfo,
    check_task,
    describe_builtin,
    infer_target_kind,
    ingest_upload,
    load_keras_npz,
    load_split,
    output_units,
)
from tuner_service.errors import InvalidDataset, InvalidInput, PayloadTooLarge

MAX = 1 << 20


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def csv_bytes(text: str) -> bytes:
    return text.strip().encode() + b"\n"


def table(n: int = 20, target: str = "label") -> str:
    lines = [f"a,b,{target}"] + [f"{i},{i * 0.5},{i % 3}" for i in range(n)]
    return "\n".join(lines)


def upload_error(data: bytes, filename: str, tmp_path: Path, **kwargs: object) -> tuple[list[str], str]:
    with pytest.raises(InvalidDataset) as exc:
        ingest_upload(data, filename, tmp_path, max_bytes=MAX, **kwargs)  # type: ignore[arg-type]
    return [e.field for e in exc.value.errors], " | ".join(e.reason for e in exc.value.errors)


@pytest.fixture
def xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 3)), rng.integers(0, 3, size=40)


# --- built-in sets ---------------------------------------------------------------------------------------

EXPECTED_KIND = {
    "digits": ("multiclass", 10),
    "breast_cancer": ("binary", 1),
    "diabetes": ("continuous", 1),
    "wine": ("multiclass", 3),
    "iris": ("multiclass", 3),
    "synthetic_regression": ("continuous", 1),
    "synthetic_multilabel": ("multilabel", 5),
    "digits_images": ("multiclass", 10),
}


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_description_matches_data(name: str, tmp_path: Path) -> None:
    info = describe_builtin(name)
    assert (info.key, info.source, info.format) == (f"builtin:{name}", "builtin", "builtin")
    assert (info.target_kind, info.n_outputs) == EXPECTED_KIND[name]
    split = load_split(info, tmp_path)
    n_val = len(split.x_val)
    assert len(split.x_train) + n_val == info.n_samples
    assert n_val == pytest.approx(0.2 * info.n_samples, abs=1)
    assert split.x_train.shape[1] == split.x_val.shape[1] == info.n_features
    assert split.x_train.dtype == np.float32
    assert infer_target_kind(datasets._load_builtin(name).y) == EXPECTED_KIND[name]
    if info.target_kind == "multiclass":
        assert split.y_train.dtype == np.int32 and split.y_train.ndim == 1
        assert set(np.unique(split.y_train)) == set(range(info.n_outputs))
    else:
        assert split.y_train.dtype == np.float32
        assert split.y_train.shape == (len(split.x_train), info.n_outputs)


def test_builtin_prefix_and_unknown() -> None:
    assert describe_builtin("builtin:iris") == describe_builtin("iris")
    with pytest.raises(InvalidDataset) as exc:
        describe_builtin("mnist")
    assert exc.value.errors[0].field == "dataset"
    assert "digits" in exc.value.errors[0].reason


def test_split_is_deterministic_cached_and_read_only(tmp_path: Path) -> None:
    info = describe_builtin("wine")
    first = load_split(info, tmp_path, seed=3)
    datasets._cached_split.cache_clear()
    again = load_split(info, tmp_path, seed=3)
    other = load_split(info, tmp_path, seed=4)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_val, again.y_val)
    assert not np.array_equal(first.y_train, other.y_train)
    assert load_split(info, tmp_path, seed=3).x_train is again.x_train
    with pytest.raises(ValueError):
        again.x_train[0, 0] = 1.0


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_split_is_stratified(name: str, tmp_path: Path) -> None:
    split = load_split(describe_builtin(name), tmp_path, validation_fraction=0.25, seed=1)
    train = np.bincount(split.y_train.ravel().astype(int)) / len(split.y_train)
    val = np.bincount(split.y_val.ravel().astype(int)) / len(split.y_val)
    assert np.abs(train - val).max() < 0.02


def test_validation_fraction_is_checked(tmp_path: Path) -> None:
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(InvalidInput) as exc:
            load_split(describe_builtin("iris"), tmp_path, validation_fraction=bad)
        assert exc.value.errors[0].field == "validation_fraction"


@pytest.mark.parametrize(
    ("name", "task_type", "dtype", "shape"),
    [
        ("breast_cancer", "multiclass", np.int32, (None,)),
        ("breast_cancer", "binary", np.float32, (None, 1)),
        ("iris", "regression", np.float32, (None, 1)),
        ("synthetic_multilabel", "multilabel", np.float32, (None, 5)),
    ],
)
def test_targets_follow_the_task(name: str, task_type: str, dtype: type, shape: tuple, tmp_path: Path) -> None:
    split = load_split(describe_builtin(name), tmp_path, task_type=task_type)
    assert split.y_train.dtype == dtype
    assert split.y_train.shape == (len(split.x_train), *shape[1:])


# --- task checks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("diabetes", {"regression"}),
        ("breast_cancer", {"regression", "binary", "multiclass", "multilabel"}),
        ("digits", {"regression", "multiclass"}),
        ("synthetic_multilabel", {"regression", "multilabel"}),
    ],
)
def test_check_task(name: str, ok: set[str]) -> None:
    info = describe_builtin(name)
    for task_type in ("regression", "binary", "multiclass", "multilabel"):
        errors = check_task(info, task_type)
        assert (not errors) == (task_type in ok), (name, task_type)
        if errors:
            assert errors[0].field == "task.type"
            assert name in errors[0].reason


def test_check_task_unknown_type_and_field() -> None:
    errors = check_task(describe_builtin("iris"), "ranking", field="study.task.type")
    assert [e.field for e in errors] == ["study.task.type"]


def test_output_units() -> None:
    assert output_units(describe_builtin("digits"), "multiclass") == 10
    assert output_units(describe_builtin("breast_cancer"), "multiclass") == 2
    assert output_units(describe_builtin("breast_cancer"), "binary") == 1
    assert output_units(describe_builtin("digits"), "regression") == 1
    assert output_units(describe_builtin("synthetic_multilabel"), "multilabel") == 5


# --- target inference ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        (np.array([-1, 1] * 10), ("binary", 1)),
        (np.array([True, False] * 10), ("binary", 1)),
        (np.array([[0.0], [1.0]] * 10), ("binary", 1)),
        (np.array([3, 7, 9, 3] * 5), ("multiclass", 3)),
        (np.array([0.0, 1.0, 2.0] * 5), ("multiclass", 3)),
        (np.arange(101), ("continuous", 1)),
        (np.linspace(0, 1, 20), ("continuous", 1)),
        (np.ones(20), ("continuous", 1)),
        (np.array([[0, 1, 1], [1, 0, 0]] * 10), ("multilabel", 3)),
        (np.array([[0.5, 1.0], [1.0, 2.0]] * 10), ("continuous", 2)),
    ],
)
def test_infer_target_kind(y: np.ndarray, expected: tuple[str, int]) -> None:
    assert infer_target_kind(y) == expected


# --- uploads ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keys", [("x", "y"), ("X", "y"), ("x_train", "y_train")])
def test_npz_upload(keys: tuple[str, str], xy: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, y = xy
    data = npz_bytes(**{keys[0]: x, keys[1]: y})
    info = ingest_upload(data, "dir/my data.npz", tmp_path, max_bytes=MAX)
    assert info.key.startswith("sha256:") and info.source == "upload" and info.format == "npz"
    assert (info.name, info.n_samples, info.n_features) == ("my data.npz", 40, 3)
    assert (info.target_kind, info.n_outputs, info.size_bytes) == ("multiclass", 3, len(data))
    assert info.path == f"datasets/{info.key.removeprefix('sha256:')}.npz"
    assert (tmp_path / info.path).read_bytes() == data
    split = load_split(info, tmp_path, validation_fraction=0.25)
    assert split.x_train.shape == (30, 3) and split.y_val.shape == (10,)
    assert DatasetInfo.from_json(info.to_json()) == info


def test_npz_with_its_own_validation_split(xy: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, y = xy
    data = npz_bytes(x_train=x[:30], y_train=y[:30] + 5, x_val=x[30:], y_val=y[30:] + 5)
    info = ingest_upload(data, "pre.npz", tmp_path, max_bytes=MAX)
    assert info.has_validation_split and info.n_samples == 40
    split = load_split(info, tmp_path)
    np.testing.assert_allclose(split.x_val, x[30:].astype(np.float32))
    np.testing.assert_array_equal(split.y_val, y[30:])  # labels 5..7 remapped to 0..2


def test_upload_is_idempotent(xy: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    data = npz_bytes(x=xy[0], y=xy[1])
    first = ingest_upload(data, "a.npz", tmp_path, max_bytes=MAX)
    second = ingest_upload(data, "a.npz", tmp_path, max_bytes=MAX)
    assert first == second
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == [Path(first.path or "").name]


def test_csv_upload(tmp_path: Path) -> None:
    data = csv_bytes(table(30))
    info = ingest_upload(data, "t.CSV", tmp_path, target_column="label", max_bytes=MAX)
    assert (info.format, info.target_column, info.n_samples, info.n_features) == ("csv", "label", 30, 2)
    assert (info.target_kind, info.n_outputs) == ("multiclass", 3)
    split = load_split(info, tmp_path, validation_fraction=0.2)
    assert split.x_train.shape == (24, 2)
    as_regression = ingest_upload(data, "t.csv", tmp_path, target_column="b", max_bytes=MAX)
    assert as_regression.target_kind == "continuous" and as_regression.key == info.key


def test_csv_text_labels(tmp_path: Path) -> None:
    rows = ["x1,x2,species"] + [f"{i},{i % 5},{['setosa', 'virginica'][i % 2]}" for i in range(12)]
    info = ingest_upload(csv_bytes("\n".join(rows)), "iris.csv", tmp_path, target_column="species", max_bytes=MAX)
    assert (info.target_kind, info.n_outputs) == ("binary", 1)
    split = load_split(info, tmp_path, validation_fraction=0.25)
    assert set(np.unique(split.y_train)) == {0.0, 1.0}


def test_stratification_falls_back_for_rare_classes(tmp_path: Path) -> None:
    x = np.arange(30, dtype=float).reshape(15, 2)
    y = np.array([0] * 7 + [1] * 7 + [2])
    info = ingest_upload(npz_bytes(x=x, y=y), "rare.npz", tmp_path, max_bytes=MAX)
    split = load_split(info, tmp_path, validation_fraction=0.2)
    assert len(split.y_train) + len(split.y_val) == 15


def test_too_large(tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLarge) as exc:
        ingest_upload(b"x" * 11, "a.csv", tmp_path, max_bytes=10)
    assert exc.value.status == 413 and exc.value.errors[0].field == "file"


@pytest.mark.parametrize("filename", ["data.txt", "data", "data.npz.zip", "data.parquet"])
def test_bad_extension(filename: str, tmp_path: Path) -> None:
    fields, reason = upload_error(b"a,b\n1,2\n", filename, tmp_path)
    assert fields == ["file"] and ".npz or .csv" in reason


def test_pickled_npz_is_rejected(tmp_path: Path) -> None:
    x = np.empty(20, dtype=object)
    x[:] = [{"a": i} for i in range(20)]
    fields, reason = upload_error(npz_bytes(x=x, y=np.arange(20)), "p.npz", tmp_path)
    assert fields == ["file"] and "pickle" in reason


def bad_npz_cases() -> list[tuple[str, dict[str, np.ndarray], str]]:
    good_x, good_y = np.ones((20, 3)), np.arange(20) % 2
    nan_x = good_x.copy()
    nan_x[3, 1] = np.nan
    inf_y = good_y.astype(float)
    inf_y[0] = np.inf
    return [
        ("missing arrays", {"features": good_x, "target": good_y}, "found: features, target"),
        ("text", {"x": np.array([["a"] * 3] * 20), "y": good_y}, "numeric"),
        ("1-d x", {"x": np.ones(20), "y": good_y}, "2-D"),
        ("3-d y", {"x": good_x, "y": np.ones((20, 1, 1))}, "1-D or 2-D"),
        ("lengths", {"x": good_x, "y": good_y[:19]}, "differ in length"),
        ("nan", {"x": nan_x, "y": good_y}, "NaN"),
        ("inf", {"x": good_x, "y": inf_y}, "NaN or infinite"),
        ("few rows", {"x": good_x[:9], "y": good_y[:9]}, "at least 10"),
        ("half val", {"x_train": good_x, "y_train": good_y, "x_val": good_x}, "together"),
        ("val width", {"x_train": good_x, "y_train": good_y, "x_val": np.ones((5, 2)), "y_val": good_y[:5]}, "x_val"),
    ]


@pytest.mark.parametrize(("case", "arrays", "needle"), bad_npz_cases(), ids=[c[0] for c in bad_npz_cases()])
def test_bad_npz(case: str, arrays: dict[str, np.ndarray], needle: str, tmp_path: Path) -> None:
    fields, reason = upload_error(npz_bytes(**arrays), "bad.npz", tmp_path)
    assert set(fields) == {"file"}
    assert needle in reason, reason
    assert not (tmp_path / "datasets").exists()  # nothing stored for a rejected upload


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty"),
        (b"not a zip file at all", "readable .npz"),
        (b"PK\x03\x04 truncated", "readable .npz"),
    ],
)
def test_unreadable_npz(data: bytes, needle: str, tmp_path: Path) -> None:
    fields, reason = upload_error(data, "x.npz", tmp_path)
    assert fields == ["file"] and needle in reason


def test_single_npy_array_is_rejected(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ones((20, 3)))
    fields, reason = upload_error(buffer.getvalue(), "x.npz", tmp_path)
    assert fields == ["file"] and ".npy" in reason


@pytest.mark.parametrize(
    ("text", "target", "field", "needle"),
    [
        ("", "label", "file", "empty"),
        ("\n\n", "label", "file", "empty"),
        ("1,2,3\n4,5,6\n", "label", "file", "header"),
        (table(20), None, "target_column", "columns: a, b, label"),
        (table(20), "price", "target_column", "columns: a, b, label"),
        (table(9), "label", "file", "at least 10"),
        ("a,b,label\n" + "1,2,0\n" * 5 + "1,oops,1\n" + "1,2,1\n" * 5, "label", "file", "column 'b', row 6"),
        ("a,b,label\n" + "1,2,0\n" * 5 + "1,,1\n" + "1,2,1\n" * 5, "label", "file", "column 'b', row 6"),
        ("a,b,label\n" + "1,2,0\n" * 10 + "nan,2,1\n", "label", "file", "column 'a', row 11"),
        ("a,b,label\n" + "1,2,0\n" * 10 + "1,2\n", "label", "file", "row 11"),
        ("a,a,label\n" + "1,2,0\n" * 10, "label", "file", "repeats"),
        ("label\n" + "1\n" * 10, "label", "file", "feature column"),
        ("a,label\n" + "1,\n" * 10, "label", "file", "target is empty"),
    ],
)
def test_bad_csv(text: str, target: str | None, field: str, needle: str, tmp_path: Path) -> None:
    fields, reason = upload_error(text.encode(), "bad.csv", tmp_path, target_column=target)
    assert fields == [field]
    assert needle in reason, reason


def test_csv_must_be_utf8(tmp_path: Path) -> None:
    fields, reason = upload_error("a,é\n".encode("latin-1"), "bad.csv", tmp_path, target_column="a")
    assert fields == ["file"] and "UTF-8" in reason


def test_csv_too_many_text_classes(tmp_path: Path) -> None:
    rows = ["a,label"] + [f"{i},class{i}" for i in range(150)]
    fields, reason = upload_error("\n".join(rows).encode(), "many.csv", tmp_path, target_column="label")
    assert fields == ["target_column"] and "150" in reason


# --- Keras on-disk formats -------------------------------------------------------------------------------


def test_keras_mnist_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=12, dtype=np.uint8)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=images[:8], y_train=labels[:8], x_test=images[8:], y_test=labels[8:])
    (x_train, y_train), (x_test, y_test) = load_keras_npz(path, "mnist")
    assert x_train.shape == (8, 784) and x_test.shape == (4, 784)
    assert x_train.dtype == np.float32 and x_train.min() >= 0.0 and x_train.max() <= 1.0
    np.testing.assert_allclose(x_test[1], images[9].ravel() / 255.0, rtol=1e-6)
    assert y_train.dtype == np.int32 and list(y_test) == list(labels[8:])


def write_idx(path: Path, array: np.ndarray, header_len: int) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(b"\x00" * header_len + array.astype(np.uint8).tobytes())


def test_keras_fashion_mnist_folder(tmp_path: Path) -> None:
    images = np.arange(5 * 784, dtype=np.uint32).reshape(5, 28, 28) % 256
    labels = np.array([3, 1, 4, 1, 5])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:3], 8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:3], 16)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[3:], 8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[3:], 16)
    (x_train, y_train), (x_test, y_test) = load_keras_npz(tmp_path, "fashion_mnist")
    assert x_train.shape == (3, 784) and x_test.shape == (2, 784)
    assert list(y_train) == [3, 1, 4] and list(y_test) == [1, 5]
    np.testing.assert_allclose(x_test[0] * 255.0, images[3].ravel(), atol=1e-3)


@pytest.mark.parametrize("name", ["boston_housing", "california_housing"])
def test_keras_housing_split(name: str, tmp_path: Path) -> None:
    x = np.arange(50 * 13, dtype=np.float64).reshape(50, 13)
    y = np.arange(50, dtype=np.float64) * 10.0
    np.savez(tmp_path / "h.npz", x=x, y=y)
    (x_train, y_train), (x_test, y_test) = load_keras_npz(tmp_path / "h.npz", name)
    assert x_train.shape == (40, 13) and x_test.shape == (10, 13)
    assert y_train.dtype == np.float32
    # Keras shuffles with RandomState(113) before its 80/20 cut; rows and targets stay paired.
    order = np.arange(50)
    np.random.RandomState(113).shuffle(order)
    np.testing.assert_array_equal(y_test, (order[40:] * 10.0).astype(np.float32))
    np.testing.assert_array_equal(x_train[:, 0] / 13.0, y_train / 10.0)


def test_keras_loader_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", x_train=np.zeros((2, 28, 28)))
    with pytest.raises(InvalidDataset, match="lacks arrays: y_train, x_test, y_test"):
        load_keras_npz(tmp_path / "m.npz", "mnist")
    with pytest.raises(InvalidDataset, match="unknown Keras data set"):
        load_keras_npz(tmp_path / "m.npz", "imdb")


def test_a_keras_format_image_archive_uploads_as_flattened_scaled_vectors(tmp_path) -> None:
    """mnist.npz as keras.datasets keeps it: 3-D uint8 images in x_train/x_test."""
    import io

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    np.savez(
        buffer, x_train=images, y_train=rng.integers(0, 10, 60), x_test=images[:20], y_test=rng.integers(0, 10, 20)
    )
    info = ingest_upload(buffer.getvalue(), "mnist.npz", tmp_path, max_bytes=10**8)
    assert info.n_features == 28 * 28 and info.target_kind == "multiclass"
    split = load_split(info, tmp_path, validation_fraction=0.2, seed=0, task_type="multiclass")
    assert split.x_train.shape[1] == 784 and split.x_train.min() >= 0.0 and split.x_train.max() <= 1.0
