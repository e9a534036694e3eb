"""Training metrics: one JSON object a line, TensorBoard scalars when `tensorboard` is installed, a PNG of the curves."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger("bertkit")


class Logbook:
    """Writes `metrics.jsonl` (and `tensorboard/`) under out_dir. Created on rank 0 only."""

    def __init__(self, out_dir: Path, resume_step: int = 0, redo_eval: bool = False):
        """`redo_eval`: the evaluation at `resume_step` runs again (the final one), so its line is dropped too."""
        self.path = out_dir / "metrics.jsonl"
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume_step and self.path.exists():
            # Drop lines logged after the checkpoint we resume from: they will be logged again.
            def kept(record: dict) -> bool:
                step = record.get("step", 0)
                return step < resume_step or (step == resume_step and not (redo_eval and record.get("split") == "eval"))

            keep = [line for line in self.path.read_text().splitlines() if kept(json.loads(line))]
            self.path.write_text("".join(line + "\n" for line in keep))
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a", encoding="utf-8")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step or None)
        except ImportError:
            logger.info("tensorboard is not installed: metrics go to %s only", self.path)

    def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
        self.file.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def plot_metrics(jsonl: Path, png: Path) -> Path | None:
    """One panel per metric, train and eval curves against the step. Needs matplotlib; skipped without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no plot written")
        return None
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    skip = {"step", "split", "epoch", "time", "skipped_steps"}
    keys = sorted({k for r in rows for k, v in r.items() if k not in skip and isinstance(v, (int, float))})
    if not keys:
        return None
    cols = min(3, len(keys))
    nrows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.2 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for split in sorted({r["split"] for r in rows}):
            pts = [(r["step"], r[key]) for r in rows if r["split"] == split and key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o" if split != "train" else None, markersize=3, label=split)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
