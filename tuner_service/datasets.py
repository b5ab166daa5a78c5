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
from array import array
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tuner_service.errors import FieldError, InvalidDataset, InvalidInput, PayloadTooLarge
from tuner_service.task import TASK_TYPES

BUILTIN_PREFIX = "builtin:"
UPLOAD_PREFIX = "sha256:"
UPLOAD_FORMATS = ("npz", "csv")
MIN_ROWS = 10
# What an upload may take once decompressed (.npz) or parsed (.csv, as float64), whatever its size as sent;
# the default of Settings.max_dataset_bytes (TUNER_MAX_DATASET_BYTES).
DEFAULT_MAX_DATASET_BYTES = 512 * 1024 * 1024
MAX_NPZ_MEMBERS = 16
MAX_CSV_COLUMNS = 10_000
_CHUNK = 1024 * 1024
_CSV_ROWS_PER_BLOCK = 4096
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
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
) -> DatasetInfo:
    """:func:`ingest_upload_stream` for bytes already in memory."""
    return ingest_upload_stream(
        io.BytesIO(data),
        filename,
        artifacts,
        target_column=target_column,
        max_bytes=max_bytes,
        max_dataset_bytes=max_dataset_bytes,
    )


def ingest_upload_stream(
    source: BinaryIO,
    filename: str,
    artifacts: Path,
    *,
    target_column: str | None = None,
    max_bytes: int,
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
) -> DatasetInfo:
    """Validate an uploaded .npz/.csv file and store it under ``artifacts/datasets/<sha256>.<ext>``.

    The file is copied to disk in chunks and hashed on the way (never held whole in memory), refused over
    ``max_bytes`` as sent and over ``max_dataset_bytes`` once decompressed or parsed (read from the .npz
    headers before anything is allocated). A refused upload leaves no file behind. The same bytes always
    land in the same file, so a repeated upload is harmless.
    """
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in UPLOAD_FORMATS:
        raise InvalidDataset.one("file", f"unsupported file type {_shown(name)}; upload a .npz or .csv file")
    # Spooled beside the data sets folder (same file system, so the final rename is atomic), which is made
    # only for an accepted upload.
    artifacts.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=artifacts, prefix=".upload-", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            digest, size = _copy_hashing(source, handle, max_bytes)
            handle.flush()
            os.fsync(handle.fileno())
        if size == 0:
            raise InvalidDataset.one("file", "the file is empty")
        if ext == "npz":
            arrays = _parse_npz_file(tmp, max_dataset_bytes)
        else:
            arrays = _parse_csv_file(tmp, target_column, max_dataset_bytes)
        y_all = arrays.y if arrays.y_val is None else np.concatenate([arrays.y, arrays.y_val])
        kind, n_outputs = infer_target_kind(y_all)
        relative = f"datasets/{digest}.{ext}"
        final = artifacts / relative
        if final.exists() and final.stat().st_size == size:
            tmp.unlink()  # content-addressed: same name, same bytes
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
        size_bytes=size,
        path=relative,
        has_validation_split=arrays.x_val is not None,
        image_shape=arrays.image_shape,
    )


def _copy_hashing(source: BinaryIO, sink: BinaryIO, max_bytes: int) -> tuple[str, int]:
    """Copy ``source`` to ``sink`` in chunks, hashing as it goes; refuse (413) past ``max_bytes``."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge.one(
                "file", f"the upload is over {max_bytes} bytes, the limit (TUNER_MAX_UPLOAD_BYTES)"
            )
        digest.update(chunk)
        sink.write(chunk)
    return digest.hexdigest(), size


def _shown(text: str) -> str:
    """``repr`` of a name the caller chose, safe to send back (no lone surrogates)."""
    return repr(text.encode("utf-8", "backslashreplace").decode("utf-8"))


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


def _file_error(reason: str) -> InvalidDataset:
    return InvalidDataset.one("file", reason)


def _parse_npz_file(path: Path, max_bytes: int | None) -> _Arrays:
    """Read an .npz archive: every member's header first (shape, dtype), refusing pickled, corrupt or
    (in total) over-``max_bytes`` arrays before any of them is decompressed."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        if _is_npy(path):
            raise _file_error("this is a single .npy array; upload a .npz archive with arrays x and y") from exc
        raise _file_error("not a readable .npz archive (save it with numpy.savez)") from exc
    with archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        if len(members) > MAX_NPZ_MEMBERS:
            raise _file_error(f"the archive has {len(members)} members; at most {MAX_NPZ_MEMBERS}")
        names = _npz_names(list(members))
        headers = {role: _npz_header(archive, members[key], key) for role, key in names.items()}
        total = sum(_declared_bytes(shape, dtype) for shape, dtype in headers.values())
        if max_bytes is not None and total > max_bytes:
            shapes = ", ".join(f"{names[r]} {shape} {dtype}" for r, (shape, dtype) in headers.items())
            raise PayloadTooLarge.one(
                "file",
                f"the arrays ({shapes}) take {total} bytes once decompressed; the limit is {max_bytes} bytes "
                "(TUNER_MAX_DATASET_BYTES)",
            )
        arrays = {role: _read_npz_member(archive, members[key], key) for role, key in names.items()}
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


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(6) == b"\x93NUMPY"


def _npz_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an .npy member declares, read from its header alone."""
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, SyntaxError, TypeError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _file_error(f"array {key!r} has a corrupt header ({_first_line(exc)}); save it with numpy.savez") from exc
    if dtype.hasobject:
        # allow_pickle=False makes numpy refuse object arrays; loading them would run pickled code.
        raise _file_error(
            f"array {key!r} holds Python objects (pickled data), which are not accepted; save plain numeric arrays"
        )
    return tuple(int(n) for n in shape), dtype


def _declared_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    count = 1
    for n in shape:  # Python ints: an absurd shape cannot overflow
        count *= n
    return count * dtype.itemsize


def _read_npz_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> np.ndarray:
    try:
        with archive.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _file_error(f"array {key!r} cannot be read: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


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


class _TextTarget(Exception):
    """The target column holds text: parse again, reading it as class labels."""


def _parse_csv_file(path: Path, target_column: str | None, max_bytes: int | None) -> _Arrays:
    """Parse a CSV upload row by row into float64 blocks, so memory follows the parsed size (refused over
    ``max_bytes``), not Python objects per cell. A text target needs a second pass, as class labels."""
    try:
        return _read_csv(path, target_column, max_bytes, labels=False)
    except _TextTarget:
        return _read_csv(path, target_column, max_bytes, labels=True)


def _read_csv(path: Path, target_column: str | None, max_bytes: int | None, *, labels: bool) -> _Arrays:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return _read_csv_rows(handle, target_column, max_bytes, labels=labels)
    except UnicodeDecodeError as exc:
        raise _file_error("a .csv upload must be UTF-8 text") from exc


def _read_csv_rows(handle: Any, target_column: str | None, max_bytes: int | None, *, labels: bool) -> _Arrays:
    reader = csv.reader(handle)
    rows = _nonblank_rows(reader)
    first = next(rows, None)
    if first is None:
        raise _file_error("the file is empty")
    header = _csv_header(first[1], target_column)
    if len(header) > MAX_CSV_COLUMNS:
        raise _file_error(f"the header has {len(header)} columns; at most {MAX_CSV_COLUMNS}")
    assert target_column is not None  # _csv_header checked it
    target_index = header.index(target_column)
    feature_names = [c for j, c in enumerate(header) if j != target_index]
    max_rows = None if max_bytes is None else max_bytes // (8 * len(header))
    blocks: list[np.ndarray] = []
    block = np.empty((_CSV_ROWS_PER_BLOCK, len(feature_names)))
    targets = _TargetColumn(target_column, labels)
    count = 0
    for line, row in rows:
        count += 1
        if len(row) != len(header):
            raise _file_error(f"row {count} (line {line}) has {len(row)} values; the header has {len(header)}")
        if max_rows is not None and count > max_rows:
            raise PayloadTooLarge.one(
                "file",
                f"more than {max_rows} rows of {len(header)} columns take over {max_bytes} bytes once parsed; "
                f"the limit is {max_bytes} bytes (TUNER_MAX_DATASET_BYTES)",
            )
        features = row[:target_index] + row[target_index + 1 :]
        slot = (count - 1) % _CSV_ROWS_PER_BLOCK
        try:
            block[slot] = features
            ok = bool(np.isfinite(block[slot]).all())
        except ValueError:
            ok = False
        if not ok:
            _raise_bad_cell(features, feature_names, count, line)
        targets.add(row[target_index], count, line)
        if slot == _CSV_ROWS_PER_BLOCK - 1:
            blocks.append(block)
            block = np.empty_like(block)
    if count < MIN_ROWS:
        raise _file_error(f"the file has {count} data rows; at least {MIN_ROWS} are needed")
    blocks.append(block[: count % _CSV_ROWS_PER_BLOCK] if count % _CSV_ROWS_PER_BLOCK else block[:0])
    x = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    return _Arrays(x, targets.array())


def _nonblank_rows(reader: Any) -> Any:
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, row
    except csv.Error as exc:
        raise _file_error(f"not valid CSV at line {reader.line_num}: {exc}") from exc


def _raise_bad_cell(values: list[str], names: list[str], row: int, line: int) -> None:
    for value, name in zip(values, names, strict=True):
        if not _is_number(value) or not np.isfinite(float(value)):
            raise _file_error(f"column {name!r}, row {row} (line {line}): {value!r} is not a finite number")
    raise _file_error(f"row {row} (line {line}) cannot be read as numbers")


class _TargetColumn:
    """The target as it is read: numbers stay numbers; text labels become class ids 0..k-1 in sorted order
    (only in ``labels`` mode: the first text value in numeric mode asks for a second pass)."""

    def __init__(self, name: str, labels: bool) -> None:
        self.name = name
        self.labels = labels
        self.values = array("d")  # compact: 8 bytes a row, not a Python float object
        self.codes = array("q")
        self.classes: dict[str, int] = {}
        self.problem: str | None = None  # a non-finite number, reported unless the column turns out to be text

    def add(self, raw: str, row: int, line: int) -> None:
        if not self.labels:
            if not _is_number(raw):
                raise _TextTarget
            value = float(raw)
            if not np.isfinite(value) and self.problem is None:
                self.problem = f"column {self.name!r}, row {row} (line {line}): {raw!r} is not a finite number"
            self.values.append(value)
            return
        label = raw.strip()
        if not label:
            raise _file_error(f"column {self.name!r}, row {row} (line {line}): the target is empty")
        self.codes.append(self.classes.setdefault(label, len(self.classes)))

    def array(self) -> np.ndarray:
        if not self.labels:
            if self.problem:
                raise _file_error(self.problem)
            return np.frombuffer(self.values, dtype=np.float64).copy()
        if len(self.classes) > MAX_CLASSES:
            raise InvalidDataset.one(
                "target_column",
                f"column {self.name!r} has {len(self.classes)} distinct text labels; at most {MAX_CLASSES} classes",
            )
        ordered = sorted(self.classes)  # ids in sorted label order, as before
        remap = np.empty(len(ordered), dtype=np.int64)
        for new, label in enumerate(ordered):
            remap[self.classes[label]] = new
        return remap[np.frombuffer(self.codes, dtype=np.int64)]


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
        # Checked against the limits when it was uploaded.
        arrays = _parse_npz_file(Path(path), None) if fmt == "npz" else _parse_csv_file(Path(path), target_column, None)
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
