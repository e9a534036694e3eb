"""Inject faults into real training runs and check that nothing is lost: the fault table of the README.

    python benchmarks/faults.py                         # every fault, 20 kill points per task family
    python benchmarks/faults.py --kills 5 --faults kill  # a quicker look

Faults:
  kill        `kill -9` of `bertkit finetune` at random moments (mid-step, mid-save, mid-evaluation), then
              `--resume`, again and again until the run ends: SST-2, CoNLL-2003 and SQuAD subsets on a small BERT.
  kill-ddp    the same for a 2-process torchrun fine-tuning run (dropout on, length-grouped batches: each rank's
              batches have their own shapes); kill-ddp-pretrain: 2-process MLM+NSP pretraining.
  corrupt     a random byte flipped in a random file of the newest checkpoint, then `--resume`.
  truncate    a random file of the newest checkpoint cut at a random length, then `--resume`.
  enospc      the run's output on a small tmpfs that fills up (needs root to mount); the failed save must leave the
              previous checkpoint intact and stop with one line; the run then resumes elsewhere.
Each ends with `model.safetensors` compared byte for byte with the same run never disturbed. Prints a Markdown table
and writes JSON to --out/faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("BERTKIT_CACHE_DIR", Path.home() / ".cache" / "bertkit"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
FAMILIES = {
    "classification (SST-2)": ["--dataset", "sst2", "--max-train-examples", "512", "--seq-len", "64"],
    "NER (CoNLL-2003)": ["--dataset", "conll2003", "--max-train-examples", "256", "--seq-len", "64"],
    "QA (SQuAD)": ["--dataset", "squad", "--max-train-examples", "96", "--seq-len", "128", "--doc-stride", "64"],
}


def small_model(root: Path) -> Path:
    """A 2-layer, 64-wide BERT with the bert-base-uncased vocabulary, dropout on: runs take seconds."""
    out = root / "small-bert"
    if not (out / "model.safetensors").exists():
        import torch

        import bertkit

        torch.manual_seed(0)
        bertkit.BertModel(bertkit.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=128)).save_pretrained(out)
        bertkit.BertTokenizer.from_pretrained("all-MiniLM-L6-v2").save_pretrained(out)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every descendant, as a power cut would (torchrun starts each worker in a session of its
    own: a process group kill leaves them running), then wait until none is left."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                pass
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 30
    while time.time() < deadline:
        alive = []
        for p in tree[1:]:  # the launcher is the caller's child: its wait() reaps it
            try:
                if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(p)
            except OSError:
                pass
        if not alive:
            return
        time.sleep(0.05)
    sys.exit(f"processes {alive} survived SIGKILL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(procs: int) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "bertkit"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
            "127.0.0.1", "--master_port", str(free_port()), "-m", "bertkit"]


def finetune_cmd(model: Path, family: str, out: Path, steps: int, procs: int = 1) -> list[str]:
    return [*launcher(procs), "finetune", "--model", str(model), *FAMILIES[family], "--max-eval-examples", "48",
            "--out", str(out), "--batch-size", "8", "--lr", "5e-4", "--max-steps", str(steps), "--save-every", "3",
            "--eval-every", "25", "--seed", "1", "--no-progress"]


def pretrain_cmd(model: Path, out: Path, steps: int, procs: int, cache: Path, data: Path) -> list[str]:
    config = out.parent / "pretrain-config.json"
    config.write_text(json.dumps({"vocab_size": 30522, "hidden_size": 64, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 128}))
    return [*launcher(procs), "pretrain", "--input", str(data / "pretrain" / "en" / "state_union"), "--tokenizer",
            str(model), "--config", str(config), "--out", str(out), "--cache-dir", str(cache), "--seq-len", "64",
            "--batch-size", "8", "--max-steps", str(steps), "--save-every", "3", "--eval-every", "25",
            "--utf8-errors", "replace", "--no-progress"]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return r


def newest_step(out: Path) -> int:
    root = out / "checkpoints"
    steps = [int(p.name[5:]) for p in root.iterdir() if p.name.startswith("step-")] if root.is_dir() else []
    return max(steps, default=0)


def killed_until_done(cmd: list[str], out: Path, kills: int, rng: random.Random) -> dict:
    """Run `cmd`, SIGKILL its process group at a random moment after it has made progress, resume, and repeat
    `kills` times; then let the last resume finish. Returns what happened."""
    shutil.rmtree(out, ignore_errors=True)
    done_kills, killed_at = 0, []
    first = True
    while True:
        proc = subprocess.Popen(cmd if first else [*cmd, "--resume"], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        first = False
        if done_kills >= kills:
            _, err = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                sys.exit(f"the last resume failed:\n{err[-3000:]}")
            break
        start = newest_step(out)
        deadline = time.time() + 600
        while newest_step(out) <= start and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)  # wait for progress past the checkpoint it resumed from
        time.sleep(rng.uniform(0, 0.6))
        if proc.poll() is not None:  # it finished before the kill: nothing more to kill
            _, err = proc.communicate()
            if proc.returncode != 0:
                sys.exit(f"a resumed run failed (exit {proc.returncode}) after {done_kills} kills:\n{err[-3000:]}")
            break
        kill_tree(proc.pid)
        proc.wait()
        proc.stderr.close()
        done_kills += 1
        killed_at.append(newest_step(out))
    return {"kills": done_kills, "steps_at_kills": killed_at}


def same_weights(a: Path, b: Path) -> bool:
    return (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def eval_lines(out: Path) -> list[dict]:
    return [x for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if x["split"] == "eval"]


def fault_kill(model, root, kills, rng, procs=1, families=None) -> list[dict]:
    rows = []
    for family in families or FAMILIES:
        steps = 240
        ref = root / f"ref-{procs}-{family.split()[0]}"
        if not (ref / "model.safetensors").exists():
            run(finetune_cmd(model, family, ref, steps, procs))
        out = root / f"killed-{procs}-{family.split()[0]}"
        t0 = time.time()
        info = killed_until_done(finetune_cmd(model, family, out, steps, procs), out, kills, rng)
        identical = same_weights(ref, out) and eval_lines(ref) == eval_lines(out)
        rows.append({"fault": f"kill -9, {'2-process torchrun ' if procs > 1 else ''}fine-tuning, {family}",
                     "injected": info["kills"], "identical": identical, "wall_s": round(time.time() - t0, 1),
                     "steps_at_kills": info["steps_at_kills"]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def fault_kill_pretrain(model, root, kills, rng, data) -> dict:
    cache = root / "pretrain-cache"
    ref = root / "ref-pretrain"
    if not (ref / "model.safetensors").exists():
        run(pretrain_cmd(model, ref, 150, 2, cache, data))
    out = root / "killed-pretrain"
    t0 = time.time()
    info = killed_until_done(pretrain_cmd(model, out, 150, 2, cache, data), out, kills, rng)
    row = {"fault": "kill -9, 2-process torchrun pretraining (MLM+NSP, State of the Union)",
           "injected": info["kills"], "identical": same_weights(ref, out) and eval_lines(ref) == eval_lines(out),
           "wall_s": round(time.time() - t0, 1), "steps_at_kills": info["steps_at_kills"]}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def damage(path: Path, how: str, rng: random.Random) -> str:
    files = sorted(p for p in path.iterdir() if p.is_file())
    victim = rng.choice(files)
    data = bytearray(victim.read_bytes())
    if how == "corrupt":
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    else:
        data = data[: rng.randrange(len(data))]
    victim.write_bytes(bytes(data))
    return victim.name


def fault_damage(model, root, how: str, trials: int, rng) -> dict:
    family = "classification (SST-2)"
    steps = 60
    ref = root / "ref-damage"
    if not (ref / "model.safetensors").exists():
        run(finetune_cmd(model, family, ref, steps))
    identical, skipped, victims = 0, 0, []
    for t in range(trials):
        out = root / f"{how}-{t}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = finetune_cmd(model, family, out, steps) + ["--keep-last", "3"]
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        stop = rng.randrange(9, steps - 9)
        while newest_step(out) < stop and proc.poll() is None:
            time.sleep(0.01)
        kill_tree(proc.pid)  # the run dies ...
        proc.wait()
        # ... and its newest checkpoint is then found damaged on disk
        newest = out / "checkpoints" / f"step-{newest_step(out):08d}"
        victims.append(damage(newest, how, rng))
        r = subprocess.run([*cmd, "--resume"], env=ENV, capture_output=True, text=True)
        skipped += f"skipping the damaged checkpoint {newest}" in r.stderr
        identical += r.returncode == 0 and same_weights(ref, out)
    row = {"fault": f"{'a flipped bit' if how == 'corrupt' else 'truncation'} in a random file of the newest "
                    "checkpoint, then --resume", "injected": trials, "identical": identical == trials,
           "identical_runs": identical, "damage_detected": skipped, "files_hit": sorted(set(victims))}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def fault_enospc(model, root) -> dict:
    family = "classification (SST-2)"
    steps = 60
    ref = root / "ref-damage"
    if not (ref / "model.safetensors").exists():
        run(finetune_cmd(model, family, ref, steps))
    mnt = root / "small-fs"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["umount", str(mnt)], capture_output=True)
    # room for two checkpoints of this model (about 12 MB each) and a bit: the third save runs out of space
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if m.returncode != 0:
        return {"fault": "no space left on the device during a save (30 MB tmpfs)", "injected": 0,
                "identical": None, "note": f"not run: cannot mount a tmpfs ({m.stderr.strip()})"}
    try:
        out = mnt / "run"
        r = subprocess.run([*finetune_cmd(model, family, out, steps), "--keep-last", "5"], env=ENV,
                           capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        last = lines[-1] if lines else ""
        kept = sorted(p.name for p in (out / "checkpoints").iterdir())  # leftovers of the failed save included
        from bertkit.training.checkpointing import verify_checkpoint

        intact = all(verify_checkpoint(out / "checkpoints" / k) is None for k in kept)
        moved = root / "enospc-resumed"
        shutil.rmtree(moved, ignore_errors=True)
        shutil.copytree(out, moved)  # "a bigger disk": resume the same run there
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
    r2 = subprocess.run([*finetune_cmd(model, family, moved, steps), "--resume"], env=ENV, capture_output=True,
                        text=True)
    row = {"fault": "no space left on the device during a save (30 MB tmpfs)", "injected": 1,
           "exit_code": r.returncode, "message": last, "checkpoints_left": kept, "all_intact": intact,
           "identical": r2.returncode == 0 and same_weights(ref, moved)}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = ["kill", "kill-ddp", "kill-ddp-pretrain", "corrupt", "truncate", "enospc"]
    p.add_argument("--faults", nargs="+", default=kinds, choices=kinds)
    p.add_argument("--kills", type=int, default=20, help="kill points per task family (single process)")
    p.add_argument("--ddp-kills", type=int, default=10, help="kill points per 2-process run")
    p.add_argument("--trials", type=int, default=10, help="damaged checkpoints per kind")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BERTKIT_DATA_DIR", "../shared/data")))
    p.add_argument("--out", type=Path, default=CACHE / "bench" / "faults")
    a = p.parse_args()
    ENV["BERTKIT_DATA_DIR"] = str(a.data_dir.resolve())
    a.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.seed)
    model = small_model(a.out)
    rows = []
    if "kill" in a.faults:
        rows += fault_kill(model, a.out, a.kills, rng)
    if "kill-ddp" in a.faults:
        rows += fault_kill(model, a.out, a.ddp_kills, rng, procs=2, families=["NER (CoNLL-2003)"])
    if "kill-ddp-pretrain" in a.faults:
        rows.append(fault_kill_pretrain(model, a.out, a.ddp_kills, rng, a.data_dir))
    for how in ("corrupt", "truncate"):
        if how in a.faults:
            rows.append(fault_damage(model, a.out, how, a.trials, rng))
    if "enospc" in a.faults:
        rows.append(fault_enospc(model, a.out))
    (a.out / "faults.json").write_text(json.dumps(rows, indent=2))
    print("| fault | injected | result |\n|---|---|---|")
    for r in rows:
        result = ("identical to the undisturbed run" if r["identical"] else "DIFFERENT") if r["identical"] is not None \
            else r.get("note", "")
        if "damage_detected" in r:
            result += f"; damaged checkpoint detected and skipped {r['damage_detected']}/{r['injected']}"
        if "all_intact" in r:
            result += (f"; exit {r['exit_code']}, one line: `{r['message']}`; checkpoints left intact: "
                       f"{r['all_intact']}")
        print(f"| {r['fault']} | {r['injected']} | {result} |")


if __name__ == "__main__":
    main()
