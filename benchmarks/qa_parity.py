"""Answer-by-answer parity of bertkit's question-answering pipeline with transformers 4.x's QuestionAnsweringPipeline
(the last major that has it), both with their defaults, on bertkit's SQuAD "dev" split (articles 38-42 of SQuAD
v1.1's official dev set: 1,032 questions). transformers 4.x runs in a subprocess of a separate virtual environment
(created on first use: torch==2.13.0 first, then transformers<5); its answers are cached. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPILOG = """examples:
  python benchmarks/qa_parity.py --model runs/squad
  python benchmarks/qa_parity.py --model runs/squad --limit 100 --out qa_parity.json
  python benchmarks/qa_parity.py --model runs/squad --venv ~/.cache/bertkit/tf4-venv --tf-only   # cache transformers' side
"""

TOP_K_DIAG = 5  # a second, top_k=5 pass on both sides, only to guess why answers differ

# Runs inside the transformers-4.x venv. argv: input JSON, output JSON.
TF4_SCRIPT = r"""
import json, sys, time
import transformers
from transformers import AutoTokenizer, pipeline
transformers.logging.set_verbosity_error()
job = json.load(open(sys.argv[1]))
model = job["model"]
pipe = pipeline("question-answering", model=model, tokenizer=model)
tok = pipe.tokenizer
max_seq_len = min(tok.model_max_length, 384)
doc_stride = min(max_seq_len // 2, 128)
out = []
t0 = time.time()
for n, item in enumerate(job["items"]):
    q, c = item["question"], item["context"]
    # What pipe(question=q, context=c) does for one question (ChunkPipeline.run_single), run once so the default
    # decoding and a top_k diagnostic share the model outputs; checked against the public call on the first 20.
    outputs = [pipe.forward(x) for x in pipe.preprocess(pipe.create_sample(question=q, context=c))]
    top1 = pipe.postprocess(outputs)
    topk = pipe.postprocess(outputs, top_k=job["top_k_diag"])
    if n < 20:
        public = pipe(question=q, context=c)
        assert public == top1, (item["id"], public, top1)
    if isinstance(topk, dict):
        topk = [topk]
    enc = tok(q, c, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
              return_overflowing_tokens=True, return_offsets_mapping=True)
    windows = []
    for w in range(len(enc["input_ids"])):
        ids = [i for i, s in enumerate(enc.sequence_ids(w)) if s == 1]
        windows.append([enc["offset_mapping"][w][ids[0]][0], enc["offset_mapping"][w][ids[-1]][1]] if ids else [0, 0])
    out.append({"id": item["id"], "answer": top1, "top_k": topk, "windows": windows})
json.dump({"transformers": transformers.__version__, "max_seq_len": max_seq_len, "doc_stride": doc_stride,
           "seconds": round(time.time() - t0, 1), "results": out}, open(sys.argv[2], "w"))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a bertkit-fine-tuned question-answering checkpoint directory")
    p.add_argument("--venv", default="~/.cache/bertkit/tf4-venv",
                   help="virtual environment with transformers<5 (created if missing; default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="first N questions (default: all 1,032)")
    p.add_argument("--data-dir", default=None, help="datasets folder (default $BERTKIT_DATA_DIR or ../shared/data)")
    p.add_argument("--cache-dir", default="~/.cache/bertkit/qa_parity", help="where transformers' answers are cached")
    p.add_argument("--out", default=None, help="also write the JSON report to FILE")
    p.add_argument("--tf-only", action="store_true", help="only compute (and cache) transformers' answers")
    p.add_argument("--max-listed", type=int, default=200, help="at most this many differing questions listed")
    return p.parse_args(argv)


def load_questions(data_dir: str | None, limit: int | None) -> list[dict]:
    root = Path(data_dir or os.environ.get("BERTKIT_DATA_DIR") or "../shared/data")
    data = json.loads((root / "squad" / "dev.json").read_text(encoding="utf-8"))
    items = [{"id": str(qa["id"]), "question": qa["question"], "context": para["context"],
              "gold": sorted({a["text"] for a in qa["answers"]})}
             for article in data["data"] for para in article["paragraphs"] for qa in para["qas"]]
    return items[:limit] if limit else items


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"creating {venv} (torch==2.13.0 first, then transformers<5)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    # torch first and pinned: the CPU wheel on the local index; any looser spec could pull a multi-GB CUDA build.
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "transformers<5"], check=True)
    return python


def model_fingerprint(model: Path) -> str:
    h = hashlib.sha256(str(model.resolve()).encode())
    for f in sorted(model.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def run_transformers(python: Path, model: Path, items: list[dict], cache_dir: Path) -> dict:
    key = hashlib.sha256(json.dumps([model_fingerprint(model), [i["id"] for i in items], TOP_K_DIAG,
                                     TF4_SCRIPT]).encode()).hexdigest()[:16]
    cache = cache_dir / f"tf4_{key}.json"
    if cache.exists():
        print(f"transformers answers from cache {cache}", file=sys.stderr)
        return json.loads(cache.read_text())
    cache_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory() as tmp:
        job, res, script = Path(tmp, "in.json"), Path(tmp, "out.json"), Path(tmp, "tf4_qa.py")
        job.write_text(json.dumps({"model": str(model.resolve()), "top_k_diag": TOP_K_DIAG,
                                   "items": [{k: i[k] for k in ("id", "question", "context")} for i in items]}))
        script.write_text(TF4_SCRIPT)
        print(f"running transformers 4.x on {len(items)} questions ...", file=sys.stderr)
        subprocess.run([str(python), str(script), str(job), str(res)], check=True, env=env, cwd=tmp)
        out = json.loads(res.read_text())
    cache.write_text(json.dumps(out))
    return out


def as_list(x):
    return [x] if isinstance(x, dict) else list(x)


def run_bertkit(model: Path, items: list[dict]) -> tuple[list[dict], list[list[dict]] | None, float, str | None]:
    import bertkit

    pipe = bertkit.pipeline("question-answering", model=str(model))
    inputs = [{"question": i["question"], "context": i["context"]} for i in items]
    t0 = time.time()
    top1 = as_list(pipe(inputs))
    seconds = time.time() - t0
    topk, err = None, None
    try:
        topk = [as_list(a) for a in pipe(inputs, top_k=TOP_K_DIAG)]
        if len(topk) != len(items):
            topk, err = None, f"top_k={TOP_K_DIAG} returned {len(topk)} lists for {len(items)} questions"
    except Exception as e:  # diagnostics only
        err = f"top_k={TOP_K_DIAG}: {type(e).__name__}: {e}"
    return top1, topk, seconds, err


def span(a: dict) -> tuple[int, int]:
    return int(a["start"]), int(a["end"])


def windows_of(s: tuple[int, int], windows: list[list[int]]) -> list[int]:
    return [w for w, (lo, hi) in enumerate(windows) if lo <= s[0] and s[1] <= hi]


def find(cands: list[dict] | None, s: tuple[int, int]) -> dict | None:
    return next((c for c in cands or [] if span(c) == s), None)


def reason(tf: dict, bk: dict, tf_topk: list[dict], bk_topk: list[dict] | None, windows: list[list[int]]) -> str:
    ts, bs = span(tf), span(bk)
    if tf["answer"] == bk["answer"]:
        return "same text other position"  # transformers merges equal texts and keeps the first-seen position
    if tf["answer"].lower() == bk["answer"].lower():
        return "case-insensitive merge"
    if ts[0] < bs[1] and bs[0] < ts[1]:
        return "alignment"  # overlapping spans with different word boundaries
    tf_alt, bk_alt = find(tf_topk, bs), find(bk_topk, ts)
    close = lambda a, b: abs(a - b) <= 1e-4 * max(abs(a), abs(b), 1e-12)  # noqa: E731
    if (tf_alt and close(tf_alt["score"], tf["score"])) or (bk_alt and close(bk_alt["score"], bk["score"])):
        return "score tie"
    if len(windows) > 1 and windows_of(ts, windows) != windows_of(bs, windows):
        return "other window"
    if tf_alt or bk_alt:
        return "rank swap"
    return "other"


def compare(items, tf_out, bk_top1, bk_topk, max_listed: int) -> dict:
    same_span = same_text = 0
    max_diff, diffs, reasons = 0.0, [], {}
    for n, (item, tf_res, bk) in enumerate(zip(items, tf_out["results"], bk_top1)):
        assert tf_res["id"] == item["id"]
        tf = tf_res["answer"]
        if span(tf) == span(bk):
            same_span += 1
            max_diff = max(max_diff, abs(float(tf["score"]) - float(bk["score"])))
        if tf["answer"] == bk["answer"]:
            same_text += 1
        if span(tf) != span(bk):
            r = reason(tf, bk, tf_res["top_k"], bk_topk[n] if bk_topk else None, tf_res["windows"])
            reasons[r] = reasons.get(r, 0) + 1
            tf_alt = find(tf_res["top_k"], span(bk))
            bk_alt = find(bk_topk[n] if bk_topk else None, span(tf))
            diffs.append({
                "id": item["id"], "question": item["question"], "windows": len(tf_res["windows"]), "reason": r,
                "transformers": {k: tf[k] for k in ("answer", "start", "end", "score")},
                "bertkit": {k: bk[k] for k in ("answer", "start", "end", "score")},
                "transformers_score_of_bertkit_answer": tf_alt["score"] if tf_alt else None,
                "bertkit_score_of_transformers_answer": bk_alt["score"] if bk_alt else None,
                "gold": item["gold"]})
    count = len(items)
    return {"count": count, "same_answer_share": round(same_span / count, 4), "same_answer": same_span,
            "same_text_share": round(same_text / count, 4), "same_text": same_text,
            "max_abs_score_diff_agreeing": max_diff, "differing": len(diffs), "reasons": reasons,
            "differences": diffs[:max_listed]}


def main(argv=None):
    args = parse_args(argv)
    model = Path(args.model).expanduser()
    if not (model / "config.json").exists():
        sys.exit(f"qa_parity: {model} has no config.json")
    items = load_questions(args.data_dir, args.limit)
    python = ensure_venv(Path(args.venv).expanduser())
    tf_out = run_transformers(python, model, items, Path(args.cache_dir).expanduser())
    report = {"model": str(model), "transformers": tf_out["transformers"], "max_seq_len": tf_out["max_seq_len"],
              "doc_stride": tf_out["doc_stride"], "transformers_seconds": tf_out["seconds"]}
    if args.tf_only:
        report["count"] = len(items)
        report["multi_window_questions"] = sum(len(r["windows"]) > 1 for r in tf_out["results"])
    else:
        bk_top1, bk_topk, seconds, err = run_bertkit(model, items)
        if len(bk_top1) != len(items):
            sys.exit(f"qa_parity: bertkit returned {len(bk_top1)} answers for {len(items)} questions")
        report["bertkit_seconds"] = round(seconds, 1)
        if err:
            report["bertkit_top_k_error"] = err
        report.update(compare(items, tf_out, bk_top1, bk_topk, args.max_listed))
    text = json.dumps(report, indent=1, ensure_ascii=False)
    if args.out:
        Path(args.out).expanduser().write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
