"""Training checkpoints: model, optimizer, scheduler, every process's RNG states and the data position.

A checkpoint is a directory written under a temporary name, fsynced and renamed into place, so a kill at any moment
leaves the previous checkpoints as they were; the last K are kept. `manifest.json` holds the SHA-256 of every file,
so a checkpoint damaged later (truncated, flipped bytes) is found at resume and skipped for the previous good one.
A save that fails (no space left, an I/O error) removes its partial directory and stops the run with one line.

    step-00000100/
        model.safetensors, config.json   the model, loadable as it is
        optimizer.pt                     optimizer, scheduler and GradScaler states
        rng.pt                           {rank: RNG states} of every process (dropout streams differ per rank)
        trainer_state.json               step, elapsed time, best metric, the run's arguments
        manifest.json                    {file: sha256}; written last
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from bertkit.errors import UserError

logger = logging.getLogger("bertkit")

PREFIX = "step-"
MANIFEST = "manifest.json"


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def write_error(e: BaseException) -> str:
    """One line for a failed write: OSError's own words, or the first line of what safetensors/torch.save raised,
    with "no space left on the device" said plainly when that is the cause."""
    text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).strip().splitlines()
    text = text[0][:300] if text else type(e).__name__
    full = isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in str(e) or "os error 28" in str(e)
    return text + (" (no space left on the device)" if full and "no space left" not in text.lower() else "")


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, scaler, trainer_state: dict,
                    keep_last: int, rng_states: dict[int, dict] | None = None) -> Path:
    """root/step-00000100/ as the module docstring lays out; returns its path. `rng_states`: {rank: rng_state()} of
    every process (default: this process's as rank 0). Any OSError while writing becomes a UserError, with the
    partial directory removed and the older checkpoints untouched."""
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".{final.name}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        model.save_pretrained(tmp)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            tmp / "optimizer.pt",
        )
        torch.save(rng_states if rng_states is not None else {0: rng_state()}, tmp / "rng.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
        sums = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps(sums, indent=2))
        _fsync_tree(tmp)
        if final.exists():  # the same step saved again (e.g. the final save right after a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except Exception as e:  # noqa: BLE001 - any failure while writing is a failed save (safetensors and torch.save
        # report a full disk as their own errors, not OSError)
        shutil.rmtree(tmp, ignore_errors=True)
        kept = list_checkpoints(root) if root.is_dir() else []
        previous = f"; the previous checkpoint {kept[-1]} is intact" if kept else ""
        raise UserError(f"cannot save the checkpoint of step {step} under {root}: {write_error(e)}{previous}") from None
    for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (renamed into place), oldest first; leftovers of a killed save are ignored."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def verify_checkpoint(path: Path) -> str | None:
    """None when every file of the checkpoint is there with the SHA-256 its manifest records (or, for a checkpoint
    written before manifests, when it has none); else what is wrong."""
    manifest = path / MANIFEST
    if not manifest.is_file():  # written before manifests existed: nothing to check against, loaded as it is
        logger.info("%s has no %s: not verified", path, MANIFEST)
        return None
    try:
        sums = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        return f"{MANIFEST} unreadable ({e})"
    if not isinstance(sums, dict):
        return f"{MANIFEST} is not a JSON object"
    for name, expected in sums.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if _sha256(file) != expected:
            return f"{name} does not match its SHA-256 (truncated or corrupt)"
    return None


def _newest_good(checkpoints: list[Path]) -> Path | None:
    for path in reversed(checkpoints):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        logger.warning("skipping the damaged checkpoint %s: %s", path, problem)
    return None


def find_resume_checkpoint(resume: str | os.PathLike, out_dir: Path) -> Path | None:
    """`--resume auto`/`latest`: the newest intact checkpoint under out_dir (None to start fresh: the caller says so);
    a damaged one is skipped for the previous, with a warning naming it. A run directory: its newest intact one.
    A checkpoint directory: that one, which must be intact."""
    if str(resume) in ("auto", "latest"):
        found = list_checkpoints(out_dir / "checkpoints")
        good = _newest_good(found)
        if found and good is None:
            raise UserError(f"--resume {resume}: every checkpoint under {out_dir / 'checkpoints'} is damaged "
                            "(see the warnings); delete them to start over")
        return good
    path = Path(resume)
    if (path / "trainer_state.json").exists():
        problem = verify_checkpoint(path)
        if problem is not None:
            raise UserError(f"--resume {resume}: the checkpoint is damaged: {problem}")
        return path
    found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
    if not found:
        raise UserError(f"--resume {resume}: no training checkpoint found there")
    good = _newest_good(found)
    if good is None:
        raise UserError(f"--resume {resume}: every checkpoint there is damaged (see the warnings)")
    return good


def resume_request(resume: str | None) -> str | None:
    """What to resume from: the user's `--resume`, or "auto" when torchrun restarted this worker after a failure
    (`--max-restarts`), so a replaced worker picks up from the newest checkpoint by itself."""
    if resume is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0:
        return "auto"
    return resume


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler, rank: int = 0) -> dict:
    """Restore everything saved by save_checkpoint into live objects, with `rank`'s RNG states; returns the
    trainer state."""
    from bertkit.checkpoint import load_into_model

    if hasattr(model, "load_checkpoint_weights"):  # a model that saves more than a checkpoint directory (distillation)
        model.load_checkpoint_weights(path)
    else:
        load_into_model(model, path)
    try:
        extra = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        rngs = torch.load(path / "rng.pt", map_location="cpu", weights_only=True) if (path / "rng.pt").exists() \
            else {0: extra["rng"]}  # checkpoints written before rng.pt held one state, in optimizer.pt
        state = json.loads((path / "trainer_state.json").read_text())
    except Exception as e:
        raise UserError(f"{path}: cannot read the training checkpoint ({str(e).splitlines()[0][:200]})") from None
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    if scaler is not None and extra["scaler"] is not None:
        scaler.load_state_dict(extra["scaler"])
    if rank not in rngs:
        raise UserError(f"{path}: saved by {len(rngs)} processes, resumed by more (rank {rank} has no RNG state); "
                        "resume with the same number of processes")
    set_rng_state(rngs[rank])
    return state
