"""Training checkpoints: model, optimizer, scheduler, RNG states and the data position, written as a directory
that appears atomically (written under a temporary name, then renamed), the last K kept."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from bertkit.errors import UserError

PREFIX = "step-"


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, scaler, trainer_state: dict,
                    keep_last: int) -> Path:
    """root/step-00000100/{model.safetensors, config.json, optimizer.pt, trainer_state.json}; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_state(),
        },
        tmp / "optimizer.pt",
    )
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    _fsync_tree(tmp)
    if final.exists():  # the same step saved again (e.g. the final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (renamed into place), oldest first; leftovers of a killed save are ignored."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def find_resume_checkpoint(resume: str | os.PathLike, out_dir: Path) -> Path | None:
    """`--resume auto`/`latest`: the newest checkpoint under out_dir (None to start fresh); else a given path."""
    if str(resume) in ("auto", "latest"):
        found = list_checkpoints(out_dir / "checkpoints")
        return found[-1] if found else None
    path = Path(resume)
    if (path / "trainer_state.json").exists():
        return path
    found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
    if not found:
        raise UserError(f"--resume {resume}: no training checkpoint found there")
    return found[-1]


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler) -> dict:
    """Restore everything saved by save_checkpoint into live objects; returns the trainer state."""
    from bertkit.checkpoint import load_into_model

    load_into_model(model, path)
    try:
        extra = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        state = json.loads((path / "trainer_state.json").read_text())
    except Exception as e:
        raise UserError(f"{path}: cannot read the training checkpoint ({str(e).splitlines()[0][:200]})") from None
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    if scaler is not None and extra["scaler"] is not None:
        scaler.load_state_dict(extra["scaler"])
    set_rng_state(extra["rng"])
    return state
