"""Running the app under uvicorn: `serve(models, settings, host, port)`, with a drain on SIGTERM.

SIGTERM (or Ctrl-C) stops admitting work (`/ready` and new requests answer 503), lets uvicorn finish the requests
in flight and the batchers run what they queued, and returns normally: the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import warnings

import uvicorn

from bertkit.errors import UserError
from bertkit.serving.app import ModelSpec, Settings, create_app

log = logging.getLogger("bertkit.serve")


def parse_model(text: str) -> ModelSpec:
    """`NAME=DIR` or `DIR` (named after the directory)."""
    from pathlib import Path

    name, sep, path = text.partition("=")
    if not sep:
        path, name = text, Path(text.rstrip("/")).name or text
    if not path:
        raise UserError(f"{text!r}: expected NAME=DIR or DIR")
    return ModelSpec(name, path)


def serve(models: list[ModelSpec], settings: Settings | None = None, host: str = "127.0.0.1", port: int = 8000,
          threads: int | None = None, log_level: str = "info", access_log: bool = False) -> None:
    """Serve `models` (none: the bundled all-MiniLM-L6-v2) until SIGTERM or Ctrl-C; then drain and return."""
    import torch

    from bertkit.checkpoint import DEFAULT_MODEL

    settings = settings or Settings()
    if threads is not None:
        torch.set_num_threads(threads)
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        warnings.warn(f"serving on {host} with no API key: anyone who can reach this port can use it "
                      "(set --api-key or BERTKIT_API_KEY)")
    check_port(host, port)
    app = create_app(models or [ModelSpec(DEFAULT_MODEL, DEFAULT_MODEL)], settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=60, lifespan="on")
    DrainingServer(config, app.state.bertkit).run()


def check_port(host: str, port: int) -> None:
    """A port that cannot be listened on is the user's one-line mistake, found before loading anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None


class DrainingServer(uvicorn.Server):
    """uvicorn's server that marks the app draining on SIGTERM/SIGINT and, after the drain, returns normally
    (uvicorn would re-raise the signal, so the process would not exit 0)."""

    def __init__(self, config: uvicorn.Config, state):
        super().__init__(config)
        self.app_state = state

    def handle_exit(self, sig, frame):
        if not self.app_state.draining:
            self.app_state.draining = True
            log.warning("%s: draining (no new work; finishing what is in flight)", signal.Signals(sig).name)
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]
