"""bertkit against transformers on this machine: same weights, same data, same threads, run alternately.
Prints one JSON object per workload (medians and the bertkit/transformers ratio) and writes them to --out.

    python benchmarks/speed.py pretrain --preset mini            # MLM+NSP step, seq 128, batch 32: tokens/s, RSS
    python benchmarks/speed.py pretrain --preset base --steps 2 --rounds 1
    python benchmarks/speed.py finetune --train-examples 8000    # all-MiniLM-L6-v2 on SST-2: wall time, dev acc
    python benchmarks/speed.py classify --model DIR              # the 872 SST-2 dev sentences: sentences/s, labels
    python benchmarks/speed.py tokenize                          # SST-2 train sentences: BertTokenizerFast vs ours
    python benchmarks/speed.py matmul                            # the fp32 matmul peak that MFU is measured against

Training workloads run each side in its own process, alternating bertkit, transformers, bertkit, ..., so that
peak RSS is each side's own; inference workloads alternate in one process. Threads: --threads (default: torch's,
one per physical core) for both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

CACHE = Path(os.environ.get("BERTKIT_CACHE_DIR", Path.home() / ".cache" / "bertkit")) / "bench" / "speed"
DATA = Path(os.environ.get("BERTKIT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
CORPUS = DATA / "pretrain" / "en" / "gutenberg"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(xs):
    return round(statistics.median(xs), 4)


def quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


# ---- matmul peak -----------------------------------------------------------------------------------------------


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, device: str = "cpu") -> float:
    """GFLOP/s of an n x n @ n x n matmul (fp32 on CPU, bf16 on CUDA), best of `repeats`: the ceiling MFU is
    measured against."""
    if device.startswith("cuda"):
        n = 8192
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn, device: str = "cpu") -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


# ---- pretraining step ------------------------------------------------------------------------------------------


def pretrain_inputs(preset: str, batch_size: int, seq_len: int, steps: int) -> Path:
    """A model directory (random init, bert-base-uncased vocabulary) and `steps` masked batches of real text."""
    import bertkit
    from bertkit.config import load_config
    from bertkit.data.dataset import build_or_load
    from bertkit.data.masking import MaskingCollator
    from bertkit.data.pretraining import PretrainingSettings

    out = CACHE / f"pretrain-{preset}-b{batch_size}-l{seq_len}-s{steps}"
    if (out / "batches.pt").exists():
        return out
    tokenizer = bertkit.BertTokenizer.from_pretrained("all-MiniLM-L6-v2")
    torch.manual_seed(0)
    model = bertkit.BertForPreTraining(load_config(preset, vocab_size=len(tokenizer)))
    model.save_pretrained(out)
    settings = PretrainingSettings(max_seq_len=seq_len, seed=0, utf8_errors="replace")
    data = build_or_load(CORPUS, tokenizer.backend_tokenizer, settings=settings)
    collator = MaskingCollator.from_tokenizer(tokenizer.backend_tokenizer, seed=0)
    batches = [collator([data[i] for i in range(s * batch_size, (s + 1) * batch_size)]) for s in range(steps + 1)]
    torch.save(batches, out / "batches.pt")
    return out


def pretrain_worker(impl: str, directory: Path, unpadded: bool, device: str = "cpu") -> dict:
    """Forward, backward and AdamW step on each batch; the first is warm-up. Times, tokens and peak RSS (on CUDA:
    bf16 autocast, and peak GPU memory)."""
    batches = [{k: v.to(device) for k, v in b.items()} for b in torch.load(directory / "batches.pt")]
    cuda = device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    if impl == "bertkit":
        import bertkit

        model = bertkit.BertForPreTraining.from_pretrained(directory)
        model.bert.unpadded = unpadded
        step_kwargs = {"sparse_mlm": True}  # what `bertkit pretrain` does
    else:
        model = quiet_transformers().BertForPreTraining.from_pretrained(directory, attn_implementation="sdpa")
        step_kwargs = {}
    model.to(device)
    with torch.no_grad(), autocast:  # parity: without dropout, both sides give the same loss on the same batch
        eval_loss = float(model.eval()(**batches[0], **step_kwargs).loss)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=cuda or None)
    times, tokens, losses = [], [], []
    for batch in batches:
        def step():
            with autocast:
                loss = model(**batch, **step_kwargs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss))
        times.append(_timed(step, device))
        tokens.append(int(batch["attention_mask"].sum()))
    gpu = {"peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20} if cuda else {}
    return {"step_s": times[1:], "tokens": tokens[1:], "eval_loss": eval_loss, "peak_rss_mib": peak_rss_mib(), **gpu,
            "matmul_gflops": matmul_peak_gflops(device=device),  # this process, this moment: the VM's speed varies
            "step_gflop": sum(step_flops(model.config, b) for b in batches[1:]) / len(batches[1:]) / 1e9}


def step_flops(config, batch) -> float:
    """Model FLOPs of one training step (forward + backward = 3 x forward): the work MLM+NSP needs, the same for
    both sides, whatever each actually computes. Per real token: 2 x the encoder's Linear weights, plus attention's
    QK^T and AV over the sequence; the vocabulary projection only at masked positions; pooler and NSP per row."""
    H, I, n_layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens, masked = int(batch["attention_mask"].sum()), int((batch["labels"] != -100).sum())
    rows, length = batch["input_ids"].shape
    per_token = n_layers * (2 * (4 * H * H + 2 * H * I) + 2 * 2 * length * H)
    head = masked * 2 * (H * H + H * config.vocab_size) + rows * 2 * (H * H + 2 * H)
    return 3 * (tokens * per_token + head)


def bench_pretrain(a) -> dict:
    directory = pretrain_inputs(a.preset, a.batch_size, a.seq_len, a.steps)
    runs = {"bertkit": [], "transformers": []}
    for _ in range(a.rounds):
        for impl in runs:
            runs[impl].append(worker("pretrain", impl, directory, a))
    result = {"workload": f"pretraining step MLM+NSP, {a.preset} preset, seq {a.seq_len}, batch {a.batch_size}"
                          + (" (bertkit unpadded)" if a.unpadded else ""), "device": a.device,
              "threads": torch.get_num_threads()}
    for impl, rs in runs.items():
        step_s = median([t for r in rs for t in r["step_s"]])
        tokens = statistics.mean(t for r in rs for t in r["tokens"])
        result[impl] = {"step_s": step_s, "tokens_per_s": round(tokens / step_s, 1),
                        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in rs)), "eval_loss": rs[0]["eval_loss"]}
        if "peak_gpu_mib" in rs[0]:
            result[impl]["peak_gpu_mib"] = round(max(r["peak_gpu_mib"] for r in rs))
    b, t = result["bertkit"], result["transformers"]
    result["eval_loss_diff"] = abs(b["eval_loss"] - t["eval_loss"])  # same weights and batch: the same loss
    result["tokens_per_s_ratio"] = round(b["tokens_per_s"] / t["tokens_per_s"], 2)
    result["peak_rss_ratio"] = round(b["peak_rss_mib"] / t["peak_rss_mib"], 2)
    # the best matmul rate seen by any worker: a shared VM's speed drifts, and MFU must not flatter by a slow moment
    peak = max(r["matmul_gflops"] for rs in runs.values() for r in rs)
    step_gflop = runs["bertkit"][0]["step_gflop"]
    for impl in runs:
        result[impl]["model_gflops_per_s"] = round(step_gflop / result[impl]["step_s"], 1)
        result[impl]["mfu"] = round(result[impl]["model_gflops_per_s"] / peak, 3)
    result["step_model_gflop"] = round(step_gflop, 1)
    result["matmul_peak_gflops"] = round(peak, 1)
    return result


# ---- fine-tuning on SST-2 --------------------------------------------------------------------------------------


def finetune_worker(impl: str, out: Path, a, seed: int) -> dict:
    t0 = time.perf_counter()
    if impl == "bertkit":
        cmd = [sys.executable, "-m", "bertkit", "finetune", "--dataset", "sst2", "--out", str(out), "--epochs", "1",
               "--max-train-examples", str(a.train_examples), "--batch-size", "32", "--lr", "1e-4", "--seq-len", "64",
               "--eval-every", "0", "--no-progress", "--seed", str(seed)]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if r.returncode:
            sys.exit(r.stderr[-2000:])
        accuracy = json.loads(r.stdout.splitlines()[-1])["eval"]["accuracy"]
    else:
        accuracy = transformers_finetune_sst2(a.train_examples, seed)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # bertkit ran as a child
    return {"wall_s": time.perf_counter() - t0, "accuracy": accuracy, "peak_rss_mib": max(peak_rss_mib(), children)}


def transformers_finetune_sst2(n: int, seed: int) -> float:
    """The usual transformers recipe: shuffled batches padded to their longest (DataCollatorWithPadding), the same
    examples, optimizer, schedule and hyper-parameters as `bertkit finetune`; returns dev accuracy in percent."""
    transformers = quiet_transformers()
    from bertkit.checkpoint import resolve_model_dir
    from bertkit.commands.finetune import subsample
    from bertkit.tasks.datasets import load_dataset

    path = resolve_model_dir("all-MiniLM-L6-v2")
    train = subsample(load_dataset("sst2", "train", DATA).examples, n, seed)
    dev = load_dataset("sst2", "dev", DATA).examples
    tok = transformers.BertTokenizerFast.from_pretrained(path)
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification.from_pretrained(path, num_labels=2)
    encoded = tok([e.text for e in train], truncation=True, max_length=64)
    label2id = {"negative": 0, "positive": 1}
    model.config.id2label, model.config.label2id = {i: n for n, i in label2id.items()}, label2id
    rows = [{"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": label2id[e.label]}
            for ids, types, mask, e in zip(encoded["input_ids"], encoded["token_type_ids"], encoded["attention_mask"],
                                           train)]
    loader = torch.utils.data.DataLoader(rows, batch_size=32, shuffle=True,
                                         collate_fn=transformers.DataCollatorWithPadding(tok))
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1e-4)
    steps = len(loader)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, round(0.06 * steps), steps)
    model.train()
    for batch in loader:
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(dev), 64):
            chunk = dev[i:i + 64]
            enc = tok([e.text for e in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt")
            predicted = model(**enc).logits.argmax(-1).tolist()
            correct += sum(p == label2id[e.label] for p, e in zip(predicted, chunk))
    return 100 * correct / len(dev)


def bench_finetune(a) -> dict:
    runs = {"bertkit": [], "transformers": []}
    for seed in a.seeds:  # one round per seed: both sides see the same examples and seed
        for impl in runs:
            runs[impl].append(worker("finetune", impl, CACHE / f"finetune-{impl}-{seed}", a, seed))
    result = {"workload": f"fine-tune all-MiniLM-L6-v2 on {a.train_examples} SST-2 examples, 1 epoch, batch 32, "
                          "seq 64, then SST-2 dev", "threads": torch.get_num_threads()}
    for impl, rs in runs.items():
        result[impl] = {"wall_s": median([r["wall_s"] for r in rs]), "seeds": a.seeds,
                        "dev_accuracy": [round(r["accuracy"], 2) for r in rs],
                        "mean_dev_accuracy": round(statistics.mean(r["accuracy"] for r in rs), 2),
                        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in rs))}
    result["wall_time_ratio"] = round(result["transformers"]["wall_s"] / result["bertkit"]["wall_s"], 2)
    result["model_dir"] = str(CACHE / f"finetune-bertkit-{a.seeds[0]}")
    return result


# ---- classification of SST-2 dev -------------------------------------------------------------------------------


def bench_classify(a) -> dict:
    """bertkit's pipeline (length-sorted batches up to a token budget) against transformers run as usually written
    (batches of 64 in input order, padded to their longest), on one fine-tuned model; then bertkit's variants."""
    transformers = quiet_transformers()
    import bertkit
    from bertkit.tasks.datasets import load_dataset

    dev = load_dataset("sst2", "dev", DATA).examples
    texts, gold = [e.text for e in dev], [e.label for e in dev]  # label names: "negative", "positive"
    ref_tok = transformers.BertTokenizerFast.from_pretrained(a.model)
    ref = transformers.BertForSequenceClassification.from_pretrained(a.model, attn_implementation="sdpa").eval()

    def run_transformers():
        labels = []
        with torch.inference_mode():
            for i in range(0, len(texts), 64):
                enc = ref_tok(texts[i:i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
                labels += [ref.config.id2label[i] for i in ref(**enc).logits.argmax(-1).tolist()]
        return labels

    variants = {"fp32": bertkit.pipeline(model=a.model, batch_size=64)}
    if a.variants:
        unpadded = bertkit.pipeline(model=a.model, batch_size=64)
        unpadded.model.bert.unpadded = True
        variants["fp32 unpadded"] = unpadded
        variants["int8 (torch dynamic quantization)"] = bertkit.pipeline(model=a.model, batch_size=64, int8=True)
        variants["onnx fp32"] = bertkit.pipeline(model=a.model, batch_size=64, backend="onnx")
        variants["onnx int8"] = bertkit.pipeline(model=a.model, batch_size=64, backend="onnx", int8=True)
        compiled = bertkit.pipeline(model=a.model, batch_size=64)
        compiled.model = torch.compile(compiled.model, dynamic=True)
        variants["fp32 torch.compile"] = compiled
    def run(pipe):
        return lambda: [r["label"] for r in pipe(texts)]

    fns = {"transformers": run_transformers, **{f"bertkit {k}": run(p) for k, p in variants.items()}}
    times = {k: [] for k in fns}
    labels, first_call_s = {}, {}
    for k, fn in fns.items():  # warm-up (and compilation), and the labels to compare
        t0 = time.perf_counter()
        labels[k] = fn()
        first_call_s[k] = round(time.perf_counter() - t0, 1)
    for _ in range(a.rounds):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    result = {"workload": "classify the 872 SST-2 dev sentences", "threads": torch.get_num_threads(), "model": a.model}
    for k in fns:
        accuracy = 100 * sum(p == g for p, g in zip(labels[k], gold)) / len(gold)
        result[k] = {"sentences_per_s": round(len(texts) / median(times[k]), 1), "first_call_s": first_call_s[k],
                     "accuracy": round(accuracy, 2),
                     "labels_differing_from_transformers": sum(x != y for x, y in
                                                                zip(labels[k], labels["transformers"]))}
    base = result["bertkit fp32"]["sentences_per_s"]
    result["sentences_per_s_ratio"] = round(base / result["transformers"]["sentences_per_s"], 2)
    for k in variants:
        if k != "fp32":
            result[f"bertkit {k}"]["vs_bertkit_fp32"] = round(result[f"bertkit {k}"]["sentences_per_s"] / base, 2)
    return result


# ---- tokenization ----------------------------------------------------------------------------------------------


def bench_tokenize(a) -> dict:
    transformers = quiet_transformers()
    import bertkit
    from bertkit.checkpoint import resolve_model_dir
    from bertkit.tasks.datasets import load_dataset

    texts = [e.text for e in load_dataset("sst2", "train", DATA).examples]
    ours = bertkit.BertTokenizer.from_pretrained("all-MiniLM-L6-v2")
    theirs = transformers.BertTokenizerFast.from_pretrained(resolve_model_dir("all-MiniLM-L6-v2"))
    fns = {"bertkit": lambda: ours(texts, truncation=True, max_length=128)["input_ids"],
           "transformers": lambda: theirs(texts, truncation=True, max_length=128)["input_ids"]}
    same = fns["bertkit"]() == fns["transformers"]()
    times = {k: [] for k in fns}
    for _ in range(a.rounds):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    result = {"workload": f"tokenize the {len(texts)} SST-2 train sentences (one batch call)", "identical_ids": same}
    for k in fns:
        result[k] = {"sentences_per_s": round(len(texts) / median(times[k]))}
    result["sentences_per_s_ratio"] = round(result["bertkit"]["sentences_per_s"] /
                                            result["transformers"]["sentences_per_s"], 2)
    return result


# ---- plumbing --------------------------------------------------------------------------------------------------


def worker(kind: str, impl: str, target: Path, a, seed: int = 0) -> dict:
    """Run one side of a workload in a fresh process (its own peak RSS); returns its JSON."""
    cmd = [sys.executable, __file__, "_worker", kind, impl, str(target), json.dumps(vars(a), default=str), str(seed)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{kind} {impl} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.splitlines()[-1])


def run_worker(kind: str, impl: str, target: str, settings: str, seed: str) -> None:
    a = argparse.Namespace(**json.loads(settings))
    if a.threads:
        torch.set_num_threads(a.threads)
    if kind == "pretrain":
        out = pretrain_worker(impl, Path(target), a.unpadded, a.device)
    else:
        out = finetune_worker(impl, Path(target), a, int(seed))
    print(json.dumps(out))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        return run_worker(*sys.argv[2:7])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=["pretrain", "finetune", "classify", "tokenize", "matmul"])
    p.add_argument("--threads", type=int, help="torch threads for both sides (default: torch's)")
    p.add_argument("--rounds", type=int, default=3, help="alternations of bertkit and transformers")
    p.add_argument("--preset", default="mini")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed pretraining steps per process (after 1 warm-up)")
    p.add_argument("--unpadded", action="store_true", help="pretrain: bertkit's unpadded encoder path")
    p.add_argument("--device", default="cpu", help="pretrain: cpu or cuda (bf16 autocast; MFU against bf16 matmul)")
    p.add_argument("--train-examples", type=int, default=8000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="finetune: one alternation per seed")
    p.add_argument("--model", default=str(CACHE / "finetune-bertkit-0"), help="classify: a fine-tuned SST-2 model")
    p.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True,
                   help="classify: also bertkit unpadded, int8 and ONNX")
    p.add_argument("--out", type=Path, default=CACHE)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    bench = {"pretrain": bench_pretrain, "finetune": bench_finetune, "classify": bench_classify,
             "tokenize": bench_tokenize,
             "matmul": lambda a: {"workload": "fp32 matmul 2048^3", "threads": torch.get_num_threads(),
                                  "gflops": round(matmul_peak_gflops(), 1)}}[a.workload]
    result = bench(a)
    a.out.mkdir(parents=True, exist_ok=True)
    name = a.workload + (f"-seeds{'-'.join(map(str, a.seeds))}" if a.workload == "finetune" else "") + (f"-{a.preset}{'-unpadded' if a.unpadded else ''}-{a.device}" if a.workload == "pretrain"
                         else "")
    (a.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
