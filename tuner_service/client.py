"""A small Python client over the REST API (the CLI uses it too)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

TERMINAL = frozenset({"completed", "cancelled", "failed"})


class ApiError(Exception):
    """The API answered with a problem; ``problem`` is its RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        errors = problem.get("errors") or []
        lines = [f"{e.get('field')}: {e.get('reason')}" for e in errors] or [problem.get("detail", "")]
        super().__init__(f"{status} {problem.get('title', 'error')}: " + "; ".join(lines))


class Client:
    """Talks to one tuner-service API at ``base_url``."""

    def __init__(
        self, base_url: str = "http://127.0.0.1:8750", *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason, "detail": response.text[:500]}
            raise ApiError(response.status_code, problem)
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")

    def submit_study(self, study: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/v1/studies", json=study)

    def study(self, study_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/studies/{study_id}")

    def studies(self, **filters: Any) -> dict[str, Any]:
        return self._call("GET", "/api/v1/studies", params=filters)

    def cancel(self, study_id: int) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/studies/{study_id}/cancel")

    def trials(self, study_id: int, **params: Any) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/studies/{study_id}/trials", params=params)

    def trial(self, study_id: int, number: int) -> dict[str, Any]:
        """Trial ``number`` of the study (its number in the study, as on the leaderboard)."""
        return self._call("GET", f"/api/v1/studies/{study_id}/trials/{number}")

    def pause(self, study_id: int) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/studies/{study_id}/pause")

    def resume(self, study_id: int) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/studies/{study_id}/resume")

    def set_priority(self, study_id: int, priority: str) -> dict[str, Any]:
        return self._call("PATCH", f"/api/v1/studies/{study_id}", json={"priority": priority})

    def queue(self, pool: str | None = None) -> dict[str, Any]:
        return self._call("GET", "/api/v1/queue", params={"pool": pool} if pool else None)

    def start_range_test(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/v1/lr-range-tests", json=spec)

    def range_test(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/lr-range-tests/{job_id}")

    def start_rerun(self, study_id: int, number: int, repeats: int = 3) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/studies/{study_id}/trials/{number}/rerun", json={"repeats": repeats})

    def rerun(self, study_id: int, number: int, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/studies/{study_id}/trials/{number}/reruns/{job_id}")

    def wait_job(
        self, fetch: Callable[[], dict[str, Any]], *, poll_s: float = 1.0, timeout_s: float = 3600
    ) -> dict[str, Any]:
        """Poll a job (range test, rerun) until it is completed or failed."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = fetch()
            if job["status"] in ("completed", "failed"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job['id']} still {job['status']} after {timeout_s} s")
            time.sleep(poll_s)

    def leaderboard(self, study_id: int | None = None, **filters: Any) -> dict[str, Any]:
        if study_id is not None:
            return self._call("GET", f"/api/v1/studies/{study_id}/leaderboard", params=filters)
        return self._call("GET", "/api/v1/leaderboard", params=filters)

    def upload_dataset(self, path: Path, target_column: str | None = None) -> dict[str, Any]:
        data = {"target_column": target_column} if target_column else {}
        with open(path, "rb") as handle:
            return self._call("POST", "/api/v1/datasets", files={"file": (path.name, handle)}, data=data)

    def download_best_model(self, study_id: int, dest: Path) -> Path:
        return self.download_model(study_id, dest)

    def download_model(self, study_id: int, dest: Path, *, trial: int | None = None) -> Path:
        """Save the study's best model, or trial number ``trial``'s, as a ``.keras`` file at ``dest``."""
        path = "best-model" if trial is None else f"trials/{trial}/model"
        response = self.http.get(f"{self.base_url}/api/v1/studies/{study_id}/{path}", timeout=self.timeout)
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.json())
        dest.write_bytes(response.content)
        return dest

    def wait(
        self,
        study_id: int,
        *,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        stop: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Poll until the study is completed, cancelled or failed, or until ``stop`` is set; returns its last
        state."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        stop = stop or threading.Event()
        while True:
            study = self.study(study_id)
            if on_progress:
                on_progress(study)
            if study["status"] in TERMINAL or stop.is_set():
                return study
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"study {study_id} still {study['status']} after {timeout_s} s")
            stop.wait(poll_s)


def __getattr__(name: str) -> Any:
    """``from tuner_service.client import RemoteTuner`` without loading it for the CLI's plain client."""
    if name == "RemoteTuner":
        from tuner_service.remote_tuner import RemoteTuner

        return RemoteTuner
    raise AttributeError(name)
