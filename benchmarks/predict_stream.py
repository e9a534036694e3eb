"""Peak memory of `bertkit predict --input FILE --output FILE` as the file grows: it streams, so the peak RSS must stay
flat from 10k to 1M lines. Prints one JSON object: per size, rows, seconds, rows/s and the peak RSS (MiB) of the
predicting process alone (os.wait4 on it).

    python benchmarks/predict_stream.py                                   # 10k and 1M lines, a tiny classifier
    python benchmarks/predict_stream.py --sizes 10000 100000 --model runs/sst2

The lines are SST-2 training sentences ($BERTKIT_DATA_DIR/sst2/train.tsv), repeated; files and outputs go under
$BERTKIT_CACHE_DIR/bench/predict_stream.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import bertkit
from bertkit.settings import cache_dir, data_dir


def tiny_classifier(directory: Path) -> Path:
    """A 2-layer, 32-wide classifier on the MiniLM vocabulary: the model's own memory is small, so what grows is
    what streaming has to keep bounded."""
    if not (directory / "config.json").exists():
        torch.manual_seed(0)
        config = bertkit.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, max_position_embeddings=128)
        config.id2label = {0: "negative", 1: "positive"}
        bertkit.BertForSequenceClassification(config).save_pretrained(directory)
        bertkit.BertTokenizer.from_pretrained("all-MiniLM-L6-v2").save_pretrained(directory)
    return directory


def input_file(path: Path, lines: int) -> Path:
    if path.exists() and sum(1 for _ in open(path, "rb")) == lines:
        return path
    sentences = [line.split("\t")[0] for line in (data_dir() / "sst2" / "train.tsv").read_text().splitlines()[1:]]
    with open(path, "w") as f:
        for i in range(lines):
            f.write(sentences[i % len(sentences)] + "\n")
    return path


def measure(model: Path, path: Path, out: Path, threads: int) -> dict:
    command = [sys.executable, "-m", "bertkit", "predict", "--model", str(model), "--input", str(path), "--output",
               str(out), "--no-progress"]
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read()
    if status != 0:
        raise SystemExit(f"predict failed ({status}): {stderr[-2000:]}")
    rows = sum(1 for _ in open(out, "rb"))
    return {"rows": rows, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    p.add_argument("--model", type=Path, help="a checkpoint directory (default: a tiny random classifier)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the predicting process (default 1)")
    args = p.parse_args()
    work = cache_dir() / "bench" / "predict_stream"
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or tiny_classifier(work / "tiny-classifier")
    results = {}
    for size in args.sizes:
        results[str(size)] = measure(model, input_file(work / f"lines-{size}.txt", size), work / f"out-{size}.jsonl",
                                     args.threads)
        print(f"{size} lines: {results[str(size)]}", file=sys.stderr)
    peaks = [r["peak_rss_mib"] for r in results.values()]
    print(json.dumps({"model": str(model), "sizes": results, "peak_rss_ratio_largest_to_smallest":
                      round(peaks[-1] / peaks[0], 3)}, indent=2))


if __name__ == "__main__":
    main()
