"""Shared by the tests that drive `bertkit` as a user would: the data folder and a subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import DATA  # noqa: F401  (re-exported: the tests that run the CLI read DATA from here)

# Never reach for the Hub from a test; every subprocess reads the same data folder as the tests themselves.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "BERTKIT_DATA_DIR": str(DATA)}


def run_cli(*args, check: bool = True, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m bertkit ARGS...` (`env`: variables to add); with `check`, a non-zero exit fails the test showing
    stderr's tail."""
    r = subprocess.run([sys.executable, "-m", "bertkit", *map(str, args)], capture_output=True, text=True,
                       env={**ENV, **(env or {})}, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}: {r.stderr[-3000:]}")
    return r
