"""Uploads with bounded memory: .npz headers are read before anything is decompressed, CSV is parsed row by
row, and every refusal names its limit and leaves no file behind."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.api.test_bad_input import DATASETS, assert_problem

GIB = 1024**3


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def zeros_bomb(path: Path, n_bytes: int) -> Path:
    """An .npz whose array x of float64 zeros takes ``n_bytes`` decompressed but about a thousandth of it
    as sent: written in chunks, so making it never holds the array either."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (n_bytes // 8 // 16, 16)}
    )
    chunk = bytes(8 * 1024 * 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            for _ in range(n_bytes // len(chunk)):
                member.write(chunk)
        archive.writestr("y.npy", npz_member(np.zeros(n_bytes // 8 // 16)))
    return path


def npz_member(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def upload(client, content: bytes, filename: str, **form: str):
    data = {"file": (io.BytesIO(content), filename), **form}
    return client.post(DATASETS, data=data, content_type="multipart/form-data")


def test_a_corrupt_npz_header_is_reported_as_corrupt(client, footprint) -> None:
    content = npz(x=np.zeros((20, 3)), y=np.zeros(20))
    broken = content.replace(b"'descr'", b"'dexxx'", 1)
    # the member's CRC no longer matches, but the header is read (and refused) before the CRC is checked
    before = footprint()
    body = assert_problem(upload(client, broken, "broken.npz"), 422, ("file",))
    assert "corrupt header" in body["detail"] and "Python objects" not in body["detail"]
    assert footprint() == before


def test_an_absurd_declared_shape_is_refused_before_allocating(client, footprint) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**13, 3)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(480))  # 20 rows of data; the header claims 10^13
        archive.writestr("y.npy", npz_member(np.zeros(20)))
    huge = buffer.getvalue()
    before = footprint()
    body = assert_problem(upload(client, huge, "huge.npz"), 413, ("file",))
    assert "TUNER_MAX_DATASET_BYTES" in body["detail"]
    assert footprint() == before


def test_a_csv_over_the_parsed_limit_is_413(settings, store, recorder, member_token, footprint) -> None:
    from tests.api.conftest import authorized
    from tuner_service.api import create_app

    app = create_app(settings.with_overrides(max_dataset_bytes=10_000), store=store, enqueue=recorder)
    client = authorized(app.test_client(), member_token)
    rows = "\n".join(f"{i},{i % 3},{i % 2}" for i in range(1000))  # 1000 rows x 3 columns x 8 bytes > 10 000
    before = footprint()
    body = assert_problem(
        upload(client, f"a,b,label\n{rows}\n".encode(), "t.csv", target_column="label"), 413, ("file",)
    )
    assert "TUNER_MAX_DATASET_BYTES" in body["detail"]
    assert footprint() == before


MEASURE = r"""
import io, json, resource, sys
from pathlib import Path
import numpy as np
from tests.conftest import make_token
from tuner_service.api import create_app
from tuner_service.config import load_settings
from tuner_service.store import Store

home, bomb = Path(sys.argv[1]), Path(sys.argv[2])
settings = load_settings({"TUNER_HOME": str(home), "TUNER_MAX_UPLOAD_BYTES": str(64 * 2**20)})
store = Store(settings.database_url)
store.upgrade()
app = create_app(settings, store=store, enqueue=lambda pool, count: None)
client = app.test_client()
client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + make_token(store, "member")

def post(content, name):
    form = {"file": (io.BytesIO(content), name)}
    return client.post("/api/v1/datasets", data=form, content_type="multipart/form-data")

small = io.BytesIO()
np.savez(small, x=np.zeros((20, 3)), y=np.arange(20) % 2)
warm = post(small.getvalue(), "small.npz")  # every import and code path the bomb takes, paid before measuring
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
response = post(bomb.read_bytes(), "bomb.npz")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
files = sorted(str(p.relative_to(settings.artifacts)) for p in settings.artifacts.rglob("*") if p.is_file())
print(json.dumps({"warm": warm.status_code, "status": response.status_code, "body": response.get_json(),
                  "before_kib": before, "after_kib": after, "files": files}))
"""


@pytest.mark.timeout(180)
def test_a_compressed_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    """1 GiB of zeros in a ~5 MB .npz: the API process's peak memory must not follow the decompressed size
    (it grew by 1.2 GB before headers were read first)."""
    bomb = zeros_bomb(tmp_path / "bomb.npz", GIB)
    assert bomb.stat().st_size < 8 * 1024 * 1024
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path / "home"), str(bomb)],
        capture_output=True,
        text=True,
        timeout=170,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["warm"] == 201
    assert report["status"] == 413, report["body"]
    assert "TUNER_MAX_DATASET_BYTES" in report["body"]["detail"]
    grown_mib = (report["after_kib"] - report["before_kib"]) / 1024
    assert grown_mib < 64, f"peak memory grew by {grown_mib:.0f} MiB while refusing the bomb"
    assert [f for f in report["files"] if "small" not in f and not f.startswith("datasets/")] == []
    assert len(report["files"]) == 1  # only the small upload accepted before the bomb


def test_json_bodies_have_a_smaller_limit_than_uploads(client, footprint) -> None:
    """A study is a few kilobytes: 2 MiB of JSON is refused (TUNER_MAX_BODY_BYTES, 1 MiB), while an upload
    of the same size is a data set like any other (TUNER_MAX_UPLOAD_BYTES, 64 MiB)."""
    before = footprint()
    padding = "x" * (2 * 1024 * 1024)
    response = client.post("/api/v1/studies", data=f'{{"name": "{padding}"}}', content_type="application/json")
    assert_problem(response, 413, ("body",))
    assert footprint() == before
    rng = np.random.default_rng(0)
    content = npz(x=rng.normal(size=(20_000, 16)), y=rng.integers(0, 2, size=20_000))
    assert len(content) > 2 * 1024 * 1024
    assert upload(client, content, "big.npz").status_code == 201
