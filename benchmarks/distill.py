"""Distillation goals, side by side: a teacher fine-tuned by bertkit (all-MiniLM-L6-v2), its students, and the same
students fine-tuned without a teacher, on the shared SST-2 and CoNLL-2003 data; fp32, all cores.

    python benchmarks/distill.py                       # every goal (about 20 minutes on 2 cores)
    python benchmarks/distill.py --only sst2 --seeds 0 # one part
    python benchmarks/distill.py --steps 40 --seeds 0 --only sst2 --examples 1280   # a smoke run

What runs (each a `bertkit` subprocess, so wall times are whole processes):
- teachers: `bertkit finetune` of all-MiniLM-L6-v2 on SST-2 (600 steps, seq 64) and CoNLL-2003 (300 steps); the
  mini student's start: `bertkit pretrain --config mini --tokenizer all-MiniLM-L6-v2` on the English corpus (900
  steps); each kept under CACHE/distill and reused.
- SST-2 `layers=3`: `bertkit distill` vs `bertkit finetune` of the same 3-layer start (the teacher's layers 0, 2, 4,
  embeddings and head), same examples, steps and seeds; reported on GLUE dev (872), nothing selected on it (the
  final model is kept). Throughput: the distill report's (teacher and student over the dev set, same batching and
  threads, median of 3 passes).
- SST-2 `mini` from the pretrain checkpoint; CoNLL-2003 `layers=3` (entity F1, validation split).
- int8: the seed-0 students through ONNX Runtime with int8 weights, accuracy and dev examples/s against the teacher
  in PyTorch fp32, timed in this process, taking turns.
Prints one JSON object with the goal table (also written to OUT/report.json).
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

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BERTKIT_CACHE_DIR", Path.home() / ".cache" / "bertkit"))
BERTKIT = [sys.executable, "-m", "bertkit"]


def run(*args, log: Path) -> tuple[dict, float]:
    """A bertkit command; (its last JSON line, wall seconds). Its output goes to `log`."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run([*BERTKIT, *map(str, args)], stdout=subprocess.PIPE, stderr=f, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"bertkit {args[0]} failed (exit {p.returncode}); see {log}")
    return json.loads(p.stdout.strip().splitlines()[-1]), wall


def teachers(base: Path) -> dict[str, Path]:
    base.mkdir(parents=True, exist_ok=True)
    made = {"sst2": base / "teacher-sst2", "conll2003": base / "teacher-conll", "mini": base / "pretrain-mini"}
    recipes = {
        "sst2": ["finetune", "--dataset", "sst2", "--max-steps", 600, "--lr", 1e-4, "--seq-len", 64],
        "conll2003": ["finetune", "--dataset", "conll2003", "--max-steps", 300, "--lr", 1e-4, "--seq-len", 128],
        "mini": ["pretrain", "--input", ROOT.parent / "shared" / "data" / "pretrain" / "en", "--tokenizer",
                 "all-MiniLM-L6-v2", "--config", "mini", "--max-steps", 900, "--max-time", 1200, "--seq-len", 128,
                 "--batch-size", 32, "--lr", 5e-4, "--utf8-errors", "replace", "--eval-every", 300,
                 "--save-every", 300],
    }
    for name, recipe in recipes.items():
        if not (made[name] / "model.safetensors").exists():
            print(f"making {made[name]} ...", file=sys.stderr)
            run(*recipe, "--out", made[name], "--no-progress", log=base / f"{made[name].name}.log")
    return made


def layers_start(teacher: Path, k: int, out: Path) -> Path:
    """The K-layer student `bertkit distill --student layers=K` starts from, saved, for the no-teacher baseline."""
    from bertkit.commands.distill import student_from_layers
    from bertkit.inference.pipeline import load

    if not (out / "model.safetensors").exists():
        the_task, net = load(teacher)
        student, _ = student_from_layers(net, k)
        student.save_pretrained(out)
        the_task.tokenizer.save_pretrained(out)
    return out


def mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def int8_speed(teacher: Path, students: dict[str, Path], repeats: int = 3) -> dict:
    """Dev accuracy and examples/s of each student as int8 ONNX against the fp32 PyTorch teacher."""
    import torch

    from bertkit.commands.distill import throughput
    from bertkit.commands.finetune import load_split
    from bertkit.inference.pipeline import load
    from bertkit.tasks import DataArgs

    the_task, teacher_net = load(teacher)
    _, examples, _ = load_split(the_task.name, DataArgs(dataset="sst2"), "dev")
    features = the_task.features(examples)
    models = {"teacher": teacher_net}
    for name, path in students.items():
        models[name] = load(path, backend="onnx", int8=True)[1]
    speed = throughput(models, the_task, examples, features, 64, repeats)
    out = {"threads": torch.get_num_threads(), "teacher": {"examples_per_s": speed["teacher"],
                                                           **the_task.evaluate(teacher_net, examples, features, 64)}}
    for name in students:
        acc = the_task.evaluate(models[name], examples, features, 64)
        out[name] = {"examples_per_s": speed[name], "speedup": speed[name] / speed["teacher"], **acc,
                     "kept": acc["accuracy"] / out["teacher"]["accuracy"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--only", nargs="+", default=["sst2", "mini", "conll2003", "int8"],
                   choices=["sst2", "mini", "conll2003", "int8"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400, help="SST-2 optimizer steps of each student run")
    p.add_argument("--examples", type=int, default=12800, help="SST-2 training examples (400 x 32: one epoch)")
    p.add_argument("--out", type=Path, default=CACHE / "bench" / "distill")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    made = teachers(CACHE / "distill")
    common = ["--dataset", "sst2", "--max-steps", a.steps, "--max-train-examples", a.examples, "--seq-len", 64,
              "--lr", 1e-4, "--no-progress"]
    report: dict = {"steps": a.steps, "examples": a.examples, "seeds": a.seeds}
    goals = []

    if "sst2" in a.only:
        start = layers_start(made["sst2"], 3, a.out / "sst2-l3-start")
        distilled, alone, walls = [], [], {"distill": [], "finetune": []}
        for seed in a.seeds:
            r, wall = run("distill", "--teacher", made["sst2"], "--student", "layers=3", "--seed", seed, *common,
                          "--out", a.out / f"sst2-l3-kd-s{seed}", log=a.out / f"sst2-l3-kd-s{seed}.log")
            distilled.append(r)
            walls["distill"].append(wall)
            f, wall = run("finetune", "--model", start, "--seed", seed, *common,
                          "--out", a.out / f"sst2-l3-ft-s{seed}", log=a.out / f"sst2-l3-ft-s{seed}.log")
            alone.append(f)
            walls["finetune"].append(wall)
        teacher_acc = distilled[0]["teacher"]["eval"]["accuracy"]
        kd = mean_sd([r["student"]["eval"]["accuracy"] for r in distilled])
        ft = mean_sd([r["eval"]["accuracy"] for r in alone])
        speed = mean_sd([r["speedup"] for r in distilled])
        report["sst2_layers3"] = {"teacher_accuracy": teacher_acc, "distilled": kd, "no_teacher": ft,
                                  "kept": kd["mean"] / teacher_acc, "speedup": speed, "wall_s": walls,
                                  "wall_ratio": [d / f for d, f in zip(walls["distill"], walls["finetune"])],
                                  "loop_s": {"distill": [r["elapsed"] for r in distilled],
                                             "finetune": [r["elapsed"] for r in alone]},
                                  "parameters": [distilled[0]["teacher"]["parameters"],
                                                 distilled[0]["student"]["parameters"]]}
        goals.append(("SST-2 layers=3 keeps >= 98% of the teacher", f"{kd['mean']:.2f} / {teacher_acc:.2f} = "
                      f"{kd['mean'] / teacher_acc:.3f}", kd["mean"] / teacher_acc >= 0.98))
        goals.append(("... at >= 1.9x its throughput", f"{speed['mean']:.2f}x ({', '.join(f'{v:.2f}' for v in speed['values'])})",
                      speed["mean"] >= 1.9))
        goals.append(("... beats no teacher by >= 1 point", f"{kd['mean']:.2f} +- {kd['sd']:.2f} vs {ft['mean']:.2f} "
                      f"+- {ft['sd']:.2f}", kd["mean"] - ft["mean"] >= 1.0))
        ratio = report["sst2_layers3"]["wall_ratio"]
        goals.append(("distill wall time <= 1.5x fine-tuning alone", ", ".join(f"{x:.2f}x" for x in ratio)
                      + " (the first builds the teacher cache)", max(ratio) <= 1.5))

    if "mini" in a.only:
        r, wall = run("distill", "--teacher", made["sst2"], "--student", made["mini"], "--seed", 0,
                      *[x if x != a.steps else 2 * a.steps for x in common], "--lr", 3e-4,
                      "--out", a.out / "sst2-mini-kd", log=a.out / "sst2-mini-kd.log")
        report["sst2_mini"] = r
        goals.append(("SST-2 mini (pretrained) keeps >= 95%", f"{r['kept']:.3f}", r["kept"] >= 0.95))
        goals.append(("... at >= 4x", f"{r['speedup']:.2f}x", r["speedup"] >= 4))

    if "conll2003" in a.only:
        r, wall = run("distill", "--teacher", made["conll2003"], "--student", "layers=3", "--dataset", "conll2003",
                      "--max-steps", 300, "--lr", 1e-4, "--seq-len", 128, "--no-progress",
                      "--out", a.out / "conll-l3-kd", log=a.out / "conll-l3-kd.log")
        report["conll_layers3"] = r
        goals.append(("CoNLL-2003 layers=3 keeps >= 97% of the F1", f"{r['student']['eval']['f1']:.2f} / "
                      f"{r['teacher']['eval']['f1']:.2f} = {r['kept']:.3f}", r["kept"] >= 0.97))

    if "int8" in a.only:
        students = {"layers3_int8": a.out / "sst2-l3-kd-s0"}
        if (a.out / "sst2-mini-kd" / "model.safetensors").exists():
            students["mini_int8"] = a.out / "sst2-mini-kd"
        report["int8"] = r = int8_speed(made["sst2"], students)
        for name in students:
            goals.append((f"{name}: >= 97% of the teacher at >= 4x its fp32 speed",
                          f"{r[name]['kept']:.3f} at {r[name]['speedup']:.2f}x",
                          r[name]["kept"] >= 0.97 and r[name]["speedup"] >= 4))

    report["goals"] = [{"goal": g, "measured": m, "met": bool(ok)} for g, m, ok in goals]
    (a.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    for g, m, ok in goals:
        print(f"| {g} | {m} | {'yes' if ok else 'MISSED'} |", file=sys.stderr)


if __name__ == "__main__":
    main()
