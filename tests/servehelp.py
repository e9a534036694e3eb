"""Shared by the server tests: a `bertkit serve` app on a free 127.0.0.1 port in a thread, stopped by the test."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path


# Tiny checkpoints of every task the server serves: name -> (bertkit class, labels)
TINY_MODELS = {"clf": ("BertForSequenceClassification", ("negative", "positive")),
               "ner": ("BertForTokenClassification", ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")),
               "qa": ("BertForQuestionAnswering", None), "mlm": ("BertForMaskedLM", None), "emb": ("BertModel", None)}


def tiny_models(root: Path) -> dict[str, Path]:
    """Every TINY_MODELS checkpoint, saved under `root/NAME`."""
    from conftest import tiny_checkpoint

    return {name: tiny_checkpoint(root / name, arch, labels) for name, (arch, labels) in TINY_MODELS.items()}


def free_port() -> int:
    """A free 127.0.0.1 port: bound, then closed (nothing listens on it until a server does)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1 in a daemon thread; `with ServerThread(app) as server: server.url`.
    Waits (at most `timeout` s) for /health, and for /ready unless `wait_ready=False`; stops on exit."""

    def __init__(self, app, timeout: float = 60, wait_ready: bool = True):
        import uvicorn

        self.app, self.port = app, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.timeout, self.wait_ready = timeout, wait_ready

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for(self.url + "/health", self.timeout)
        if self.wait_ready:
            wait_for(self.url + "/ready", self.timeout)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop within 30 s"

    def post(self, path: str, body, headers: dict | None = None, timeout: float = 60):
        return request(self.url + path, body, headers, timeout)

    def get(self, path: str, headers: dict | None = None, timeout: float = 60):
        return request(self.url + path, None, headers, timeout)


def request(url: str, body=None, headers: dict | None = None, timeout: float = 60):
    """(status, headers, JSON or text) of a GET (body None) or a JSON POST; errors are returned, not raised."""
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, head, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, dict(e.headers), e.read()
    try:
        return status, {k.lower(): v for k, v in head.items()}, json.loads(raw)
    except ValueError:
        return status, {k.lower(): v for k, v in head.items()}, raw.decode(errors="replace")


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout} s")
        time.sleep(0.1)
