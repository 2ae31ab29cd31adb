"""Steady traffic on the running Serve app, and waiting for its replicas to serve a version."""

from __future__ import annotations

import threading
import time

import httpx

from tests.support.listings import known_location

#: What /ready reports a model for: the ingress (it prices /predict and explains) and the predictor.
MODEL_PARTS = ("api", "predictor")

#: A home the test champion prices without warnings (a city and zip of its market).
LISTING = {"bed": 4, "bath": 3, "acre_lot": 0.3, "house_size": 2400, **known_location("Florida")}

#: What the load's clients send, client i the (i mod 3)th.
REQUESTS = (("/explain", LISTING), ("/predict/batch", {"listings": [LISTING, LISTING]}), ("/predict", LISTING))


class LoadGenerator:
    """Closed-loop clients hammering /predict, /predict/batch and /explain; records every response.

    /predict and /explain are answered in the ingress replicas, /predict/batch by the predictors.

    ``results`` holds (monotonic time the answer came, path, status, model version); a transport
    error is recorded with status 0 and its repr in ``errors``.
    """

    def __init__(self, url: str, clients: int = 6):
        self.url, self.clients = url, clients
        self.stop = threading.Event()
        self.results: list[tuple[float, str, int, str | None]] = []  # (time, path, status, version)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        path, body = REQUESTS[index % len(REQUESTS)]
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(path, json=body)
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    record = (time.monotonic(), path, response.status_code, version)
                except httpx.HTTPError as exc:
                    record = (time.monotonic(), path, 0, None)
                    self.errors.append(repr(exc))
                with self._lock:
                    self.results.append(record)

    def answered(self) -> int:
        """Answers so far (any status)."""
        with self._lock:
            return len(self.results)

    def wait_for_answers(self, count: int, *, timeout: float = 120.0) -> None:
        """Block until ``count`` more answers came in: traffic is really flowing, however slow the machine."""
        target, deadline = self.answered() + count, time.monotonic() + timeout
        while self.answered() < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.answered()} of {target} answers within {timeout:.0f}s")
            time.sleep(0.05)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=120)


def wait_for_version(url: str, version: str, *, timeout: float = 120.0) -> dict:
    """Poll /ready until the ingress and the predictor both report ``version``; returns that body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/ready", timeout=30).json()
        if all(body[part].get("model_version") == version for part in MODEL_PARTS):
            return body
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not move to version {version}: {body}")
