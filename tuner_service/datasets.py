"""Data sets: scikit-learn's bundled sets, uploads (.npz/.csv) stored by content hash, Keras' on-disk formats.

This module runs in the API process, so it never imports TensorFlow or Keras; scikit-learn is imported
only inside the functions that need it.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import os
import tempfile
import zipfile
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from tuner_service.errors import FieldError, InvalidDataset, InvalidInput, PayloadTooLarge
from tuner_service.task import TASK_TYPES

BUILTIN_PREFIX = "builtin:"
UPLOAD_PREFIX = "sha256:"
UPLOAD_FORMATS = ("npz", "csv")
MIN_ROWS = 10
MAX_CLASSES = 100
TARGET_KINDS = ("continuous", "binary", "multiclass", "multilabel")
KERAS_SETS = ("mnist", "fashion_mnist", "boston_housing", "california_housing")

# Shapes of the built-in sets, known without loading them so that the API can describe a set cheaply;
# a test checks this table against the real data. (n_samples, n_features, target_kind, n_outputs)
_BUILTINS: dict[str, tuple[int, int, str, int]] = {
    "digits": (1797, 64, "multiclass", 10),
    "breast_cancer": (569, 30, "binary", 1),
    "diabetes": (442, 10, "continuous", 1),
    "wine": (178, 13, "multiclass", 3),
    "iris": (150, 4, "multiclass", 3),
    "synthetic_regression": (2000, 20, "continuous", 1),
    "synthetic_multilabel": (2000, 20, "multilabel", 5),
    "digits_images": (1797, 64, "multiclass", 10),  # digits kept as 8x8x1 images scaled to [0, 1]
}
_BUILTIN_IMAGE_SHAPES: dict[str, tuple[int, ...]] = {"digits_images": (8, 8, 1)}
BUILTIN_NAMES: tuple[str, ...] = tuple(_BUILTINS)

# Which target kinds each task type can learn; regression takes any numeric target.
_TASK_TARGETS: dict[str, tuple[str, ...]] = {
    "regression": TARGET_KINDS,
    "binary": ("binary",),
    "multiclass": ("multiclass", "binary"),
    "multilabel": ("multilabel", "binary"),
}


@dataclass(frozen=True)
class DatasetInfo:
    """What the service knows about a data set without loading it: where it is and the shape of its target."""

    key: str
    name: str
    source: str
    format: str
    n_samples: int
    n_features: int
    target_kind: str
    n_outputs: int
    target_column: str | None = None
    size_bytes: int = 0
    path: str | None = None
    has_validation_split: bool = False
    # (height, width, channels) of an image set, whose rows are stored flattened; None for feature vectors.
    image_shape: tuple[int, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DatasetInfo:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        if values.get("image_shape") is not None:
            values["image_shape"] = tuple(values["image_shape"])
        return cls(**values)


@dataclass(frozen=True, eq=False)
class Split:
    """Training and validation arrays: float32 features; targets laid out for the task (see load_split)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass(frozen=True, eq=False)
class _Arrays:
    """Parsed data before splitting; ``x_val``/``y_val`` only when the upload carried its own split."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    image_shape: tuple[int, ...] | None = None


# --- built-in sets --------------------------------------------------------------------------------------


def describe_builtin(name: str) -> DatasetInfo:
    """Describe a built-in set by name (``digits`` or ``builtin:digits``)."""
    bare = name.removeprefix(BUILTIN_PREFIX)
    if bare not in _BUILTINS:
        known = ", ".join(BUILTIN_NAMES)
        raise InvalidDataset.one("dataset", f"unknown built-in data set {bare!r}; known: {known}")
    n_samples, n_features, kind, n_outputs = _BUILTINS[bare]
    return DatasetInfo(
        key=BUILTIN_PREFIX + bare,
        name=bare,
        source="builtin",
        format="builtin",
        n_samples=n_samples,
        n_features=n_features,
        target_kind=kind,
        n_outputs=n_outputs,
        image_shape=_BUILTIN_IMAGE_SHAPES.get(bare),
    )


def _load_builtin(name: str) -> _Arrays:
    from sklearn import datasets as sk

    if name == "synthetic_regression":
        x, y = sk.make_regression(n_samples=2000, n_features=20, n_informative=10, noise=10.0, random_state=0)
    elif name == "synthetic_multilabel":
        x, y = sk.make_multilabel_classification(n_samples=2000, n_features=20, n_classes=5, n_labels=2, random_state=0)
    elif name == "digits_images":
        x, y = sk.load_digits(return_X_y=True)
        x = x / 16.0  # pixels are 0..16
    else:
        loader = {
            "digits": sk.load_digits,
            "breast_cancer": sk.load_breast_cancer,
            "diabetes": sk.load_diabetes,
            "wine": sk.load_wine,
            "iris": sk.load_iris,
        }[name]
        x, y = loader(return_X_y=True)
    return _Arrays(np.asarray(x), np.asarray(y))


# --- uploads --------------------------------------------------------------------------------------------


def ingest_upload(
    data: bytes,
    filename: str,
    artifacts: Path,
    *,
    target_column: str | None = None,
    max_bytes: int,
) -> DatasetInfo:
    """Validate an uploaded .npz/.csv file and store it under ``artifacts/datasets/<sha256>.<ext>``.

    The same bytes always land in the same file, so a repeated upload is harmless.
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge.one("file", f"the upload is {len(data)} bytes; the limit is {max_bytes} bytes")
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in UPLOAD_FORMATS:
        raise InvalidDataset.one("file", f"unsupported file type {name!r}; upload a .npz or .csv file")
    if not data:
        raise InvalidDataset.one("file", "the file is empty")
    arrays = _parse_npz(data) if ext == "npz" else _parse_csv(data, target_column)
    y_all = arrays.y if arrays.y_val is None else np.concatenate([arrays.y, arrays.y_val])
    kind, n_outputs = infer_target_kind(y_all)
    digest = hashlib.sha256(data).hexdigest()
    relative = f"datasets/{digest}.{ext}"
    _write_atomic(artifacts / relative, data)
    return DatasetInfo(
        key=UPLOAD_PREFIX + digest,
        name=name,
        source="upload",
        format=ext,
        n_samples=len(y_all),
        n_features=int(arrays.x.shape[1]),
        target_kind=kind,
        n_outputs=n_outputs,
        target_column=target_column if ext == "csv" else None,
        size_bytes=len(data),
        path=relative,
        has_validation_split=arrays.x_val is not None,
        image_shape=arrays.image_shape,
    )


def infer_target_kind(y: np.ndarray) -> tuple[str, int]:
    """Guess (target_kind, n_outputs) from the target values; the user's task type is checked against it."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        kind = "multilabel" if np.isin(y, (0, 1)).all() else "continuous"
        return kind, int(y.shape[1])
    if y.dtype.kind == "b":
        return "binary", 1
    if y.dtype.kind in "iu" or np.array_equal(y, np.round(y)):
        n_classes = len(np.unique(y))
        if n_classes == 2:
            return "binary", 1
        if 2 < n_classes <= MAX_CLASSES:
            return "multiclass", n_classes
    return "continuous", 1


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    if path.exists() and path.stat().st_size == len(data):
        return  # content-addressed: same name, same bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_error(reason: str) -> InvalidDataset:
    return InvalidDataset.one("file", reason)


def _parse_npz(data: bytes) -> _Arrays:
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        # np.load raises ValueError for pickled content, OSError/BadZipFile for anything else unreadable.
        raise _file_error("not a readable .npz archive (save it with numpy.savez)") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _file_error("this is a single .npy array; upload a .npz archive with arrays x and y")
    with archive:
        names = _npz_names(archive.files)
        arrays = {role: _read_npz_array(archive, key) for role, key in names.items()}
    image_shape = _image_shape(arrays["x"])
    if "x_val" in arrays and image_shape is not None and _image_shape(arrays["x_val"]) != image_shape:
        raise _file_error(f"x_val holds images of shape {arrays['x_val'].shape[1:]}; x_train's are {image_shape}")
    for role in ("x", "x_val"):
        if role in arrays:
            arrays[role] = _as_feature_matrix(arrays[role])
    result = _Arrays(arrays["x"], arrays["y"], arrays.get("x_val"), arrays.get("y_val"), image_shape)
    errors = _check_arrays(result, names)
    if errors:
        raise InvalidDataset(errors)
    return result


def _image_shape(x: np.ndarray) -> tuple[int, ...] | None:
    """(h, w, c) of an (n, h, w) or (n, h, w, c) numeric array; None for anything else."""
    if x.dtype.kind not in "uif" or x.ndim not in (3, 4):
        return None
    return (*x.shape[1:3], 1) if x.ndim == 3 else tuple(int(d) for d in x.shape[1:])


def _npz_names(files: list[str]) -> dict[str, str]:
    """Map roles (x, y, x_val, y_val) to the array names this archive uses."""
    present = set(files)
    for x_name, y_name in (("x", "y"), ("X", "y"), ("x_train", "y_train")):
        if {x_name, y_name} <= present:
            names = {"x": x_name, "y": y_name}
            break
    else:
        found = ", ".join(sorted(present)) or "no arrays"
        raise _file_error(
            f"needs arrays x and y (or X and y, or x_train and y_train with optional x_val and y_val); found: {found}"
        )
    if names["x"] == "x_train" and ({"x_val", "y_val"} & present):
        if not {"x_val", "y_val"} <= present:
            raise _file_error("x_val and y_val must be given together")
        names.update(x_val="x_val", y_val="y_val")
    elif names["x"] == "x_train" and {"x_test", "y_test"} <= present:
        # Keras' own layout (mnist.npz, fashion_mnist.npz): its test split is the validation split.
        names.update(x_val="x_test", y_val="y_test")
    return names


def _read_npz_array(archive: Any, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        # allow_pickle=False makes numpy refuse object arrays; loading them would run pickled code.
        raise _file_error(
            f"array {key!r} holds Python objects (pickled data), which are not accepted; save plain numeric arrays"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _file_error(f"array {key!r} cannot be read: {exc}") from exc


def _check_arrays(arrays: _Arrays, names: dict[str, str]) -> list[FieldError]:
    """Every problem of the parsed arrays, each naming the array."""
    errors = [_check_numeric(arr, names[role]) for role, arr in _roles(arrays)]
    problems = [e for e in errors if e]
    if problems:
        return [FieldError("file", p) for p in problems]
    problems = _check_shapes(arrays.x, arrays.y, names["x"], names["y"], min_rows=MIN_ROWS)
    if arrays.x_val is not None and arrays.y_val is not None:
        problems += _check_shapes(arrays.x_val, arrays.y_val, "x_val", "y_val", min_rows=1)
        if not problems:
            problems += _check_val_matches(arrays)
    return [FieldError("file", p) for p in problems]


def _roles(arrays: _Arrays) -> list[tuple[str, np.ndarray]]:
    pairs = [("x", arrays.x), ("y", arrays.y), ("x_val", arrays.x_val), ("y_val", arrays.y_val)]
    return [(role, arr) for role, arr in pairs if arr is not None]


def _check_numeric(arr: np.ndarray, name: str) -> str:
    if arr.dtype.kind not in "biuf":
        return f"array {name!r} must be numeric; its dtype is {arr.dtype}"
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return f"array {name!r} contains NaN or infinite values"
    return ""


def _check_shapes(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str, *, min_rows: int) -> list[str]:
    problems = []
    if x.ndim != 2 or x.shape[1] == 0:
        problems.append(f"array {x_name!r} must be 2-D (samples, features); its shape is {x.shape}")
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        problems.append(f"array {y_name!r} must be 1-D or 2-D (samples, outputs); its shape is {y.shape}")
    if x.ndim and y.ndim and len(x) != len(y):
        problems.append(f"arrays {x_name!r} and {y_name!r} differ in length: {len(x)} and {len(y)}")
    elif x.ndim and len(x) < min_rows:
        problems.append(f"array {x_name!r} has {len(x)} rows; at least {min_rows} are needed")
    return problems


def _check_val_matches(arrays: _Arrays) -> list[str]:
    assert arrays.x_val is not None and arrays.y_val is not None
    problems = []
    if arrays.x_val.shape[1] != arrays.x.shape[1]:
        problems.append(f"x_val has {arrays.x_val.shape[1]} features; x_train has {arrays.x.shape[1]}")
    if arrays.y_val.shape[1:] != arrays.y.shape[1:]:
        problems.append(f"y_val has shape {arrays.y_val.shape}; it must match y_train's {arrays.y.shape}")
    return problems


def _parse_csv(data: bytes, target_column: str | None) -> _Arrays:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _file_error("a .csv upload must be UTF-8 text") from exc
    reader = csv.reader(io.StringIO(text))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise _file_error(f"not valid CSV at line {reader.line_num}: {exc}") from exc
    if not rows:
        raise _file_error("the file is empty")
    header = _csv_header(rows[0][1], target_column)
    body = rows[1:]
    if len(body) < MIN_ROWS:
        raise _file_error(f"the file has {len(body)} data rows; at least {MIN_ROWS} are needed")
    for i, (line, row) in enumerate(body, start=1):
        if len(row) != len(header):
            raise _file_error(f"row {i} (line {line}) has {len(row)} values; the header has {len(header)}")
    columns = list(zip(*(row for _, row in body), strict=True))
    lines = [line for line, _ in body]
    assert target_column is not None  # _csv_header checked it
    target_index = header.index(target_column)
    features = [_numeric_column(col, header[j], lines) for j, col in enumerate(columns) if j != target_index]
    x = np.stack(features, axis=1)
    y = _target_column(columns[target_index], target_column, lines)
    return _Arrays(x, y)


def _csv_header(raw: list[str], target_column: str | None) -> list[str]:
    header = [cell.strip() for cell in raw]
    if all(_is_number(cell) for cell in header):
        raise _file_error("the first row must be a header of column names; it holds only numbers")
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise _file_error(f"the header repeats column names: {', '.join(duplicates)}")
    listed = ", ".join(header)
    if target_column is None:
        raise InvalidDataset.one("target_column", f"required for a .csv upload; columns: {listed}")
    if target_column not in header:
        raise InvalidDataset.one("target_column", f"no column {target_column!r}; columns: {listed}")
    if len(header) < 2:
        raise _file_error("needs at least one feature column besides the target")
    return header


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric_column(values: tuple[str, ...], name: str, lines: list[int]) -> np.ndarray:
    """Parse one column as float64, naming the first bad cell when it fails."""
    try:
        column = np.array(values, dtype=np.float64)
    except ValueError:
        column = None
    if column is not None and np.isfinite(column).all():
        return column
    for i, value in enumerate(values):
        if not _is_number(value) or not np.isfinite(float(value)):
            raise _file_error(f"column {name!r}, row {i + 1} (line {lines[i]}): {value!r} is not a finite number")
    raise AssertionError("unreachable: a column that failed to parse has a bad cell")


def _target_column(values: tuple[str, ...], name: str, lines: list[int]) -> np.ndarray:
    """Numbers stay numbers; text labels become class ids 0..k-1 in sorted order."""
    if all(_is_number(v) for v in values):
        return _numeric_column(values, name, lines)
    labels = [v.strip() for v in values]
    for i, label in enumerate(labels):
        if not label:
            raise _file_error(f"column {name!r}, row {i + 1} (line {lines[i]}): the target is empty")
    classes, codes = np.unique(np.array(labels), return_inverse=True)
    if len(classes) > MAX_CLASSES:
        raise InvalidDataset.one(
            "target_column",
            f"column {name!r} has {len(classes)} distinct text labels; at most {MAX_CLASSES} classes",
        )
    return codes.astype(np.int64)


# --- tasks and splits -----------------------------------------------------------------------------------


def check_task(info: DatasetInfo, task_type: str, *, field: str = "task.type") -> list[FieldError]:
    """Problems with learning ``task_type`` on this data set's target (empty when it fits)."""
    if task_type not in TASK_TYPES:
        return [FieldError(field, f"unknown task type {task_type!r}; one of: {', '.join(TASK_TYPES)}")]
    fits = _TASK_TARGETS[task_type]
    if info.target_kind in fits:
        return []
    needs = " or ".join(fits)
    return [
        FieldError(
            field,
            f"a {task_type} task needs a {needs} target; data set {info.name!r} has a {_describe_target(info)}",
        )
    ]


def _describe_target(info: DatasetInfo) -> str:
    if info.target_kind == "multiclass":
        return f"multiclass target ({info.n_outputs} classes)"
    if info.target_kind == "multilabel":
        return f"multilabel target ({info.n_outputs} labels)"
    return f"{info.target_kind} target"


def output_units(info: DatasetInfo, task_type: str) -> int:
    """Width of the model's output layer for ``task_type`` on this data set."""
    if task_type == "binary":
        return 1
    if task_type == "multiclass":
        return 2 if info.target_kind == "binary" else info.n_outputs
    if task_type == "regression" and info.target_kind in ("binary", "multiclass"):
        return 1  # class ids regressed as one number
    return info.n_outputs


def load_split(
    info: DatasetInfo,
    artifacts: Path,
    *,
    validation_fraction: float = 0.2,
    seed: int = 0,
    task_type: str | None = None,
) -> Split:
    """Train/validation arrays, cached in-process; the arrays are read-only because the cache shares them.

    Binary and multiclass targets are split stratified. Targets are int32 class ids of shape (n,) for a
    multiclass task and float32 of shape (n, outputs) otherwise; without ``task_type`` the layout follows
    the data set's target kind.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise InvalidInput.one("validation_fraction", f"must be between 0 and 1; got {validation_fraction}")
    path = None if info.source == "builtin" else str(artifacts / (info.path or ""))
    split = _cached_split(info.key, path, info.format, info.target_column, info.target_kind, validation_fraction, seed)
    layout = task_type or ("multiclass" if info.target_kind == "multiclass" else "regression")
    return Split(
        split.x_train,
        _targets_for(split.y_train, layout),
        split.x_val,
        _targets_for(split.y_val, layout),
    )


@functools.lru_cache(maxsize=4)  # uploads may be large; a worker trains one set at a time
def _cached_split(
    key: str,
    path: str | None,
    fmt: str,
    target_column: str | None,
    kind: str,
    fraction: float,
    seed: int,
) -> Split:
    if path is None:
        return _frozen(_split_arrays(_load_builtin(key.removeprefix(BUILTIN_PREFIX)), kind, fraction, seed))
    # One file's bytes may hold several data sets (a CSV read with another target column): that is in the name.
    column = hashlib.sha256((target_column or "").encode()).hexdigest()[:12]
    cache = Path(path).parent / "splits" / f"{Path(path).stem}-{column}-{kind}-{fraction}-{seed}"
    if not (cache / "done").exists():
        data = Path(path).read_bytes()
        arrays = _parse_npz(data) if fmt == "npz" else _parse_csv(data, target_column)
        _write_split_cache(cache, _frozen(_split_arrays(arrays, kind, fraction, seed)))
    return _mapped_split(cache)


def _split_arrays(arrays: _Arrays, kind: str, fraction: float, seed: int) -> Split:
    if arrays.x_val is not None and arrays.y_val is not None:
        y = _encode_target(np.concatenate([arrays.y, arrays.y_val]), kind)
        return Split(arrays.x, y[: len(arrays.y)], arrays.x_val, y[len(arrays.y) :])
    return _split(arrays.x, _encode_target(arrays.y, kind), kind, fraction, seed)


_SPLIT_PARTS = ("x_train", "y_train", "x_val", "y_val")


def _write_split_cache(cache: Path, split: Split) -> None:
    """Keep an upload's split as plain .npy files, written once, so that every worker process on the
    machine memory-maps the same pages instead of parsing and holding its own copy of a large set."""
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for part in _SPLIT_PARTS:
        np.save(tmp / f"{part}.npy", getattr(split, part), allow_pickle=False)
    (tmp / "done").write_text("")
    try:
        os.replace(tmp, cache)
    except OSError:  # another worker finished first (the directory exists and is not empty): use its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _mapped_split(cache: Path) -> Split:
    return Split(*(np.load(cache / f"{part}.npy", mmap_mode="r", allow_pickle=False) for part in _SPLIT_PARTS))


def _encode_target(y: np.ndarray, kind: str) -> np.ndarray:
    """Class labels become ids 0..k-1 (int32, shape (n,)); everything else float32 of shape (n, outputs)."""
    if kind in ("binary", "multiclass"):
        _, codes = np.unique(y.reshape(len(y)), return_inverse=True)
        return codes.astype(np.int32)
    return y.astype(np.float32).reshape(len(y), -1)


def _split(x: np.ndarray, y: np.ndarray, kind: str, fraction: float, seed: int) -> Split:
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(x))
    stratify = y if kind in ("binary", "multiclass") else None
    try:
        train, val = train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:
        # A class too rare to appear on both sides (or fewer validation rows than classes):
        # stratifying is impossible, a plain shuffled split still works.
        train, val = train_test_split(indices, test_size=fraction, random_state=seed)
    return Split(x[train], y[train], x[val], y[val])


def _frozen(split: Split) -> Split:
    arrays = []
    for arr, dtype in (
        (split.x_train, np.float32),
        (split.y_train, split.y_train.dtype),
        (split.x_val, np.float32),
        (split.y_val, split.y_val.dtype),
    ):
        out = np.ascontiguousarray(arr, dtype=dtype)
        out.flags.writeable = False
        arrays.append(out)
    return Split(*arrays)


def _targets_for(y: np.ndarray, task_type: str) -> np.ndarray:
    if task_type == "multiclass":
        return y.reshape(len(y)).astype(np.int32, copy=False)
    return y.astype(np.float32, copy=False).reshape(len(y), -1)


# --- Keras' downloadable sets ---------------------------------------------------------------------------


def load_keras_npz(path: Path, name: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load a Keras data set from its on-disk file, as ``keras.datasets.<name>.load_data`` would.

    Images are flattened to vectors and scaled to [0, 1] for an MLP; labels are int32. The housing sets
    use Keras' own 80/20 shuffle (seed 113), so results compare with published Keras numbers.
    """
    path = Path(path)
    if name in ("mnist", "fashion_mnist"):
        (x_train, y_train), (x_test, y_test) = _read_image_set(path)
        return (_flatten_images(x_train), y_train.astype(np.int32)), (
            _flatten_images(x_test),
            y_test.astype(np.int32),
        )
    if name in ("boston_housing", "california_housing"):
        x, y = _read_npz_keys(path, ("x", "y"))
        return _keras_test_split(x.astype(np.float32), y.astype(np.float32), test_split=0.2, seed=113)
    raise InvalidDataset.one("dataset", f"unknown Keras data set {name!r}; known: {', '.join(KERAS_SETS)}")


_IDX_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)


def _read_image_set(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """mnist.npz keys, or Fashion-MNIST's folder of four gzipped IDX files as Keras downloads it."""
    if path.is_dir():
        y_train = _read_idx(path / _IDX_FILES[0], offset=8)
        x_train = _read_idx(path / _IDX_FILES[1], offset=16).reshape(len(y_train), 28, 28)
        y_test = _read_idx(path / _IDX_FILES[2], offset=8)
        x_test = _read_idx(path / _IDX_FILES[3], offset=16).reshape(len(y_test), 28, 28)
        return (x_train, y_train), (x_test, y_test)
    x_train, y_train, x_test, y_test = _read_npz_keys(path, ("x_train", "y_train", "x_test", "y_test"))
    return (x_train, y_train), (x_test, y_test)


def _read_idx(path: Path, *, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=offset)


def _read_npz_keys(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise InvalidDataset.one("dataset", f"{path.name} lacks arrays: {', '.join(missing)}")
        return [archive[k] for k in keys]


def _as_feature_matrix(x: np.ndarray) -> np.ndarray:
    """Images (samples, height, width[, channels]) as the vectors an MLP takes, like the Keras loaders do:
    flattened, and 8-bit pixels scaled to [0, 1]. Anything else is left for the shape checks."""
    if x.ndim < 3 or x.dtype.kind not in "uif":
        return x
    if x.dtype == np.uint8:
        return _flatten_images(x)
    return x.reshape(len(x), -1)


def _flatten_images(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)


def _keras_test_split(
    x: np.ndarray, y: np.ndarray, *, test_split: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    # Same shuffle and cut as keras.datasets.boston_housing/california_housing.load_data.
    indices = np.arange(len(x))
    np.random.RandomState(seed).shuffle(indices)
    x, y = x[indices], y[indices]
    cut = int(len(x) * (1 - test_split))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])
