"""Fine-tune a model on the shared datasets and report each task's dev metric against its goal, with wall time.

    python benchmarks/finetune_tasks.py --tasks sst2 stsb mrpc conll2003 squad            # all-MiniLM-L6-v2
    python benchmarks/finetune_tasks.py --tasks sst2 stsb --model ~/.cache/bertkit/bench/pretrain-en-mini \\
        --vs-random                                     # the pretrained mini model against random initialisation
    python benchmarks/finetune_tasks.py --tasks weibo_ner resume_ner cmrc2018 \\
        --model ~/.cache/bertkit/bench/pretrain-zh-mini --vs-random
    python benchmarks/finetune_tasks.py --tasks sst2 mrpc stsb conll2003 --seeds 0 1 2 --short   # the README table

Each run is `bertkit finetune` with the recipe below (capped by --minutes per run). Nothing is selected on the split
that is reported: the final model is kept (no best-checkpoint choice) and scored on the dev split, or on the test
split where the dataset has one (MRPC: test.txt; its dev split, carved from train, is not used). `--short` uses the
shorter step counts of the README's 3-seed table. Prints one JSON object (also written to --out/report.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("BERTKIT_CACHE_DIR", Path.home() / ".cache" / "bertkit"))
# dataset -> (flags, main metric, goal for all-MiniLM-L6-v2 or None)
RECIPES = {
    "sst2": (["--epochs", "1", "--lr", "1e-4", "--seq-len", "64", "--eval-every", "500"], "accuracy", 90.0),
    "stsb": (["--epochs", "4", "--lr", "1e-4", "--seq-len", "128"], "spearman", 85.0),
    "mrpc": (["--epochs", "4", "--lr", "1e-4", "--seq-len", "128"], "f1", None),
    "conll2003": (["--epochs", "3", "--lr", "1e-4", "--seq-len", "128"], "f1", 88.0),
    "wnut17": (["--epochs", "4", "--lr", "1e-4", "--seq-len", "128"], "f1", None),
    "squad": (["--epochs", "2", "--lr", "1e-4", "--seq-len", "384", "--doc-stride", "128"], "f1", 70.0),
    "weibo_ner": (["--epochs", "5", "--lr", "1e-4", "--seq-len", "128"], "f1", None),
    "resume_ner": (["--epochs", "3", "--lr", "1e-4", "--seq-len", "128"], "f1", None),
    "cmrc2018": (["--epochs", "2", "--lr", "1e-4", "--seq-len", "384", "--doc-stride", "128"], "f1", None),
    "afqmc": (["--epochs", "1", "--lr", "1e-4", "--seq-len", "128"], "accuracy", None),
}
# --short: fixed step counts (the LR schedule ends where the run ends) that fit 3 seeds of 4 tasks in about 30 min on 2 cores
SHORT = {"sst2": ["--max-steps", "300", "--lr", "1e-4", "--seq-len", "64"],
         "mrpc": ["--max-steps", "230", "--lr", "1e-4", "--seq-len", "128"],
         "stsb": ["--max-steps", "200", "--lr", "1e-4", "--seq-len", "128"],
         "conll2003": ["--max-steps", "200", "--lr", "1e-4", "--seq-len", "128"]}
REPORTED_SPLIT = {"mrpc": "test"}  # where the dataset has a test split here, it is what is reported


def random_init_copy(model: str, out: Path) -> Path:
    """The same architecture and tokenizer as `model`, with BERT's random initialisation."""
    import torch

    from bertkit import BertConfig, BertModel, BertTokenizer

    if not (out / "model.safetensors").exists():
        torch.manual_seed(0)
        BertModel(BertConfig.from_pretrained(model)).save_pretrained(out)
        BertTokenizer.from_pretrained(model).save_pretrained(out)
    return out


def _bertkit(*args: str) -> dict:
    cmd = [sys.executable, "-m", "bertkit", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.splitlines()[-1])


def finetune(model: str, task: str, seed: int, minutes: float, out: Path, extra: list[str], short: bool) -> dict:
    flags, metric, _ = RECIPES[task]
    if short:
        flags = SHORT[task]
    t0 = time.perf_counter()
    result = _bertkit("finetune", "--dataset", task, "--model", model, "--out", str(out), "--seed", str(seed),
                      "--max-time", str(minutes * 60), "--no-progress", "--batch-size", "32", *flags, *extra)
    split = REPORTED_SPLIT.get(task, "dev")
    metrics = result["eval"] if split == "dev" else _bertkit("evaluate", "--model", str(out), "--dataset", task,
                                                                 "--split", split)
    return {"value": round(metrics[metric], 2), "split": split, "selected_by": result.get("selected_by", "final"),
            "wall_s": round(time.perf_counter() - t0, 1), "steps": result["step"],
            "stop_reason": result["stop_reason"]}


def summarise(runs: list[dict]) -> dict:
    values = [r["value"] for r in runs]
    return {"mean": round(statistics.mean(values), 2), "std": round(statistics.stdev(values), 2) if len(values) > 1
            else None, "runs": runs}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=list(RECIPES), default=["sst2", "stsb", "mrpc", "conll2003", "squad"])
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--vs-random", action="store_true", help="also fine-tune the same architecture from random init")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--minutes", type=float, default=30, help="cap per fine-tuning run")
    p.add_argument("--out", type=Path, default=CACHE / "bench" / "finetune")
    p.add_argument("--short", action="store_true", help="the shorter fixed-step recipes of the README table")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for bertkit finetune")
    a = p.parse_args()
    models = {"pretrained": a.model}
    if a.vs_random:
        models["random_init"] = str(random_init_copy(a.model, a.out / "random-init"))
    report: dict = {"model": a.model, "minutes_cap": a.minutes, "tasks": {}}
    for task in a.tasks:
        metric, goal = RECIPES[task][1], RECIPES[task][2]
        entry: dict = {"metric": metric, "goal": goal}
        for kind, model in models.items():
            runs = [finetune(model, task, s, a.minutes, a.out / f"{task}-{kind}-seed{s}", a.extra, a.short) for s in a.seeds]
            entry[kind] = summarise(runs)
            print(json.dumps({task: {kind: entry[kind]}}), file=sys.stderr, flush=True)
        if a.vs_random:
            entry["pretraining_gain"] = round(entry["pretrained"]["mean"] - entry["random_init"]["mean"], 2)
        report["tasks"][task] = entry
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
