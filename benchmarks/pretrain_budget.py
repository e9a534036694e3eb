"""Pretrain a preset for a wall-clock budget on the shared corpora and report held-out MLM/NSP accuracy, tokens/s and
peak RSS. Trains its own WordPiece vocabulary per language, exactly as a user would with the CLI.

    python benchmarks/pretrain_budget.py --lang en --minutes 30            # English, mini preset
    python benchmarks/pretrain_budget.py --lang zh --minutes 30 --wwm      # Chinese vocabulary, jieba whole words
    python benchmarks/pretrain_budget.py --lang en --minutes 1 --threads 1 # a smoke run

The step count for the LR schedule is calibrated from a short timed run so the schedule ends near the budget;
--max-time stops the run at the budget whatever happens. Prints one JSON object and writes it to OUT/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("BERTKIT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
CACHE = Path(os.environ.get("BERTKIT_CACHE_DIR", Path.home() / ".cache" / "bertkit"))
VOCAB = {"en": 16000, "zh": 8000}


def bertkit(*args, env):
    r = subprocess.run([sys.executable, "-m", "bertkit", *map(str, args)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bertkit {args[0]} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def last_train_row(out: Path) -> dict:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"][-1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lang", choices=["en", "zh"], default="en")
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--preset", default="mini")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--wwm", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    out = a.out or CACHE / "bench" / f"pretrain-{a.lang}-{a.preset}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    corpus = DATA / "pretrain" / a.lang
    tok_dir = out.parent / f"tokenizer-{a.lang}-{VOCAB[a.lang]}"
    if not (tok_dir / "vocab.txt").exists():
        bertkit("tokenizer", "train", "--input", corpus, "--vocab-size", VOCAB[a.lang], "--out", tok_dir,
                "--utf8-errors", "replace", env=env)
    common = ["pretrain", "--input", corpus, "--tokenizer", tok_dir, "--config", a.preset, "--seq-len", a.seq_len,
              "--batch-size", a.batch_size, "--lr", a.lr, "--utf8-errors", "replace", "--no-progress",
              *(["--wwm"] if a.wwm else [])]
    # Calibrate: seconds per step on this machine, with the data cache built (and so not timed) by this run.
    calib = out.parent / f"calibrate-{a.lang}-{a.preset}"
    bertkit(*common, "--out", calib, "--max-steps", 5, "--eval-every", 0, "--save-every", 0, env=env)
    t0 = time.perf_counter()
    bertkit(*common, "--out", calib, "--max-steps", 25, "--eval-every", 0, "--save-every", 0, "--heldout", 0, env=env)
    rate = last_train_row(calib)["tokens_per_s"]
    tokens_per_step = a.batch_size * a.seq_len * 0.93  # instances are slightly shorter than seq_len on average
    budget = a.minutes * 60
    steps = max(50, int(0.9 * budget * rate / tokens_per_step))  # ~10% of the budget goes to evaluation
    print(f"calibration: {rate:.0f} tokens/s ({time.perf_counter() - t0:.0f}s); planning {steps} steps", file=sys.stderr)

    t0 = time.perf_counter()
    result = json.loads(bertkit(*common, "--out", out, "--max-steps", steps, "--max-time", budget,
                                "--eval-every", max(1, steps // 5), "--save-every", max(1, steps // 5), env=env))
    wall = time.perf_counter() - t0
    row = last_train_row(out)
    report = {
        "lang": a.lang,
        "preset": a.preset,
        "wwm": a.wwm,
        "vocab_size": VOCAB[a.lang],
        "budget_s": budget,
        "wall_s": round(wall, 1),
        "steps": result["step"],
        "planned_steps": steps,
        "stop_reason": result["stop_reason"],
        "heldout_mlm_acc": result["eval"]["mlm_acc"],
        "heldout_nsp_acc": result["eval"]["nsp_acc"],
        "heldout_mlm_loss": result["eval"]["mlm_loss"],
        "train_tokens_per_s": round(row["tokens_per_s"], 1),
        "train_tokens_per_s_incl_eval": round(result["tokens"] / result["elapsed"], 1),
        "peak_rss_mib": result["peak_rss_mib"],  # of the pretraining process
        "threads": a.threads or os.cpu_count(),
        "model_dir": str(out),
        "plot": str(out / "training_curves.png"),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
