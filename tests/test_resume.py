"""Exact resume after `kill -9`: fine-tuning of each task family, and 2-process torchrun runs (pretraining and
fine-tuning with length-grouped batches of different shapes on each rank, dropout on), elastic restarts, a 2-node
job on one machine, and a rank that dies. Each killed run is compared byte for byte with a run never killed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from clihelp import ENV
from servehelp import free_port

import bertkit
from bertkit.training.checkpointing import list_checkpoints

pytestmark = pytest.mark.slow  # minutes on 2 cores: `make test-slow`, which CI runs after `make test`
ENV1 = {**ENV, "OMP_NUM_THREADS": "1"}  # two processes on two cores
WORDS = "the a film movie great good bad awful plot actor story scene music long short dull bright".split()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return task_files(tmp_path_factory.mktemp("data"))


def task_files(root: Path) -> dict[str, Path]:
    """Small files of each task family, with lengths that vary a lot (length-grouped batches differ in shape)."""
    rng = random.Random(0)
    clf = root / "clf.tsv"
    clf.write_text("text\tlabel\n" + "".join(
        f"{' '.join(rng.choices(WORDS, k=rng.randint(2, 40)))}\t{rng.choice(['pos', 'neg'])}\n" for _ in range(96)))
    ner = root / "ner.conll"
    sentences = []
    for _ in range(64):
        n = rng.randint(2, 30)
        tags = [rng.choice(["O", "O", "B-PER", "B-LOC"]) for _ in range(n)]
        sentences.append("\n".join(f"{rng.choice(WORDS)} {t}" for t in tags))
    ner.write_text("\n\n".join(sentences) + "\n")
    qa = root / "qa.json"
    paragraphs = []
    for i in range(24):
        context = " ".join(rng.choices(WORDS, k=rng.randint(10, 120)))
        answer = context.split()[rng.randrange(len(context.split()))]
        paragraphs.append({"context": context, "qas": [{"id": f"q{i}", "question": f"which word {i}?",
                                                         "answers": [{"text": answer,
                                                                      "answer_start": context.index(answer)}]}]})
    qa.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return {"text-classification": clf, "token-classification": ner, "question-answering": qa}


def torchrun(nproc: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
            "127.0.0.1", "--master_port", str(free_port()), *extra, "-m", "bertkit"]


def finetune_args(model, task, path, out, steps=24, *extra) -> list[str]:
    seq = ["--seq-len", "96", "--doc-stride", "32"] if task == "question-answering" else ["--seq-len", "64"]
    return ["finetune", "--model", str(model), "--task", task, "--train", str(path), "--dev", str(path), "--out",
            str(out), "--batch-size", "4", "--lr", "1e-3", "--max-steps", str(steps), "--save-every", "2",
            "--eval-every", "7", "--seed", "3", "--no-progress", *seq, *extra]


def run(cmd: list[str], env=ENV, timeout=600) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (torchrun starts each worker in a session of its own, so a process group kill
    would leave the workers running)."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                pass
    return tree


def kill_tree(pid: int) -> list[int]:
    """SIGKILL `pid` and every descendant, as a power cut would: the launcher first, so it restarts nothing."""
    tree = process_tree(pid)
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return tree


def kill_at_random_moment(cmd: list[str], out: Path, env=ENV, seed: int = 0, timeout=300) -> float:
    """Start `cmd` in its own process group, wait for its first checkpoint, then SIGKILL the whole group after a
    random delay; returns the delay. A run that finished first is retried with a shorter delay."""
    rng = random.Random(seed)
    delay_cap = 2.0
    for _ in range(4):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        deadline = time.time() + timeout
        while not list_checkpoints(out / "checkpoints"):
            assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.02)
        delay = rng.uniform(0, delay_cap)
        time.sleep(delay)
        finished = proc.poll() is not None
        tree = kill_tree(proc.pid) if not finished else []
        proc.wait()
        wait_gone(tree)
        proc.stderr.close()
        if not finished and not (out / "model.safetensors").exists():
            return delay
        delay_cap /= 4  # killed too late: the run had finished; start over, sooner
        for leftover in (out / "checkpoints").iterdir():
            subprocess.run(["rm", "-rf", str(leftover)])
        (out / "model.safetensors").unlink(missing_ok=True)
    pytest.fail("could not kill the run before it finished")


def wait_gone(pids: list[int], timeout: float = 30) -> None:
    """Wait until every process of a killed run is gone: none may write on after the kill."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = []
        for p in pids:
            try:
                state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(p)
        if not alive:
            return
        time.sleep(0.05)
    pytest.fail(f"processes of the killed run are still alive: {alive}")


def eval_lines(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["split"] == "eval"]


def assert_identical(a: Path, b: Path) -> None:
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes(), "weights differ"
    assert eval_lines(a) == eval_lines(b)


@pytest.mark.parametrize("task", ["text-classification", "token-classification", "question-answering"])
def test_finetune_killed_at_a_random_moment_resumes_byte_identical(tiny_model, data, tmp_path, task):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    expected = json.loads(run([sys.executable, "-m", "bertkit", *finetune_args(tiny_model, task, data[task], whole)]
                              ).stdout.splitlines()[-1])
    cmd = [sys.executable, "-m", "bertkit", *finetune_args(tiny_model, task, data[task], broken)]
    kill_at_random_moment(cmd, broken, seed=hash(task) % 1000)
    r = run([*cmd, "--resume"])
    assert "resumed from" in r.stderr, r.stderr[-2000:]
    resumed = json.loads(r.stdout.splitlines()[-1])
    assert_identical(whole, broken)
    assert resumed["eval"] == expected["eval"] and resumed["step"] == expected["step"] == 24


def test_resume_without_a_checkpoint_says_so(tiny_model, data, tmp_path):
    out = tmp_path / "fresh"
    r = run([sys.executable, "-m", "bertkit", *finetune_args(tiny_model, "text-classification",
                                                             data["text-classification"], out, 2), "--resume"])
    assert "no checkpoint under" in r.stderr and "starting from step 0" in r.stderr, r.stderr


def test_two_process_finetune_killed_resumes_byte_identical(tiny_model, data, tmp_path):
    """Length-grouped batches: each rank's micro-batch has its own padded length; dropout differs per rank."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    path = data["text-classification"]
    run([*torchrun(2), *finetune_args(tiny_model, "text-classification", path, whole)], env=ENV1)
    cmd = [*torchrun(2), *finetune_args(tiny_model, "text-classification", path, broken)]
    kill_at_random_moment(cmd, broken, env=ENV1, seed=1)
    assert "resumed from" in run([*cmd, "--resume"], env=ENV1).stderr
    assert_identical(whole, broken)
    rngs = torch.load(list_checkpoints(broken / "checkpoints")[-1] / "rng.pt", weights_only=True)
    assert sorted(rngs) == [0, 1] and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])  # a stream per rank


def test_two_process_shapes_differ_per_rank(tiny_model, data):
    """The premise of the test above: with length grouping, the two ranks' micro-batches differ in shape."""
    from bertkit.training.trainer import _MicroBatches
    from bertkit.training.distributed import DistInfo

    from bertkit.tasks import get_task, DataArgs

    tok = bertkit.BertTokenizer.from_pretrained(tiny_model)
    cls = get_task("text-classification")
    examples = cls.read(data["text-classification"], DataArgs(None, None, None, None, None, None, None, False))
    task = cls.for_training(tok, examples, None, max_length=64)
    feats = task.features(examples)
    lengths = [len(f["input_ids"]) for f in feats]
    shapes = [[_MicroBatches(feats, lambda rows, idx, e: task.collate(rows), 4, DistInfo(r, 2), 3, lengths)[m]
               ["input_ids"].shape[1] for m in range(12)] for r in (0, 1)]
    assert shapes[0] != shapes[1]


PRETRAIN_CONFIG = dict(vocab_size=0, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=64)  # dropout at BERT's default 0.1


@pytest.fixture(scope="module")
def pretrain_setup(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("pretrain")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(1)
    for d in range(6):
        paragraphs = [". ".join(" ".join(rng.choices(WORDS, k=rng.randint(4, 12))) for _ in range(rng.randint(2, 6)))
                      + "." for _ in range(20)]
        (corpus / f"doc{d}.txt").write_text("\n\n".join(paragraphs) + "\n")
    config = root / "config.json"
    config.write_text(json.dumps({**PRETRAIN_CONFIG, "vocab_size": len(bertkit.BertTokenizer.from_pretrained(
        tiny_model))}))
    return corpus, config, root / "cache"


def pretrain_args(setup, tokenizer, out, steps=20) -> list[str]:
    corpus, config, cache = setup
    return ["pretrain", "--input", str(corpus), "--tokenizer", str(tokenizer), "--config", str(config), "--out",
            str(out), "--cache-dir", str(cache), "--seq-len", "48", "--batch-size", "4", "--max-steps", str(steps),
            "--save-every", "2", "--eval-every", "5", "--no-progress"]


def test_two_process_pretraining_killed_resumes_byte_identical(pretrain_setup, tiny_model, tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run([*torchrun(2), *pretrain_args(pretrain_setup, tiny_model, whole)], env=ENV1)
    cmd = [*torchrun(2), *pretrain_args(pretrain_setup, tiny_model, broken)]
    kill_at_random_moment(cmd, broken, env=ENV1, seed=2)
    assert "resumed from" in run([*cmd, "--resume"], env=ENV1).stderr
    assert_identical(whole, broken)


def workers_of(launcher: subprocess.Popen) -> list[int]:
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
    return [int(x) for x in children.read_text().split()] if children.exists() else []


def test_elastic_restart_replaces_a_killed_worker_and_resumes_by_itself(tiny_model, data, tmp_path):
    whole, elastic = tmp_path / "whole", tmp_path / "elastic"
    path = data["text-classification"]
    run([*torchrun(2), *finetune_args(tiny_model, "text-classification", path, whole)], env=ENV1)
    launcher = subprocess.Popen([*torchrun(2, "--max-restarts", "1"),
                                 *finetune_args(tiny_model, "text-classification", path, elastic)],
                                env=ENV1, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list_checkpoints(elastic / "checkpoints"):
        assert launcher.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    time.sleep(random.Random(int(os.environ.get("ELASTIC_SEED", "4"))).uniform(0, 0.5))
    workers = workers_of(launcher)
    assert workers, "no worker processes found"
    os.kill(workers[-1], signal.SIGKILL)
    out, err = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, err[:6000]
    assert "resumed from" in err, "the replaced workers did not resume from a checkpoint"
    assert_identical(whole, elastic)


def test_two_nodes_on_one_machine_train_as_one_node_with_two_processes(tiny_model, data, tmp_path):
    one_node, two_nodes = tmp_path / "one", tmp_path / "two"
    path = data["token-classification"]
    run([*torchrun(2), *finetune_args(tiny_model, "token-classification", path, one_node, 10)], env=ENV1)
    port = str(free_port())
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
                               "1", "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", port,
                               "-m", "bertkit", *finetune_args(tiny_model, "token-classification", path, two_nodes,
                                                               10)],
                              env=ENV1, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    assert_identical(one_node, two_nodes)


def test_a_rank_that_dies_takes_the_others_down(tiny_model, data, tmp_path):
    out = tmp_path / "dies"
    launcher = subprocess.Popen([*torchrun(2), *finetune_args(tiny_model, "text-classification",
                                                              data["text-classification"], out, 400)],
                                env=ENV1, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list_checkpoints(out / "checkpoints"):
        assert launcher.poll() is None and time.time() < deadline
        time.sleep(0.02)
    os.kill(workers_of(launcher)[-1], signal.SIGKILL)
    t0 = time.time()
    _, err = launcher.communicate(timeout=120)  # no hang: the launcher stops the other rank and exits
    assert launcher.returncode != 0 and time.time() - t0 < 60
    assert "Signal 9 (SIGKILL)" in err and "rank" in err, err[-3000:]
    assert not workers_of(launcher)


def test_distill_killed_at_a_random_moment_resumes_byte_identical(tiny_model, data, tmp_path):
    """`bertkit distill` resumes as fine-tuning does: the student, its hidden-state projections (a 128-wide preset
    student of a 32-wide teacher), the optimizer and the RNGs come back; the teacher cache is reused."""
    from conftest import tiny_checkpoint

    teacher = tiny_checkpoint(tmp_path / "teacher", "BertForSequenceClassification", ("neg", "pos"))
    path = data["text-classification"]

    def cmd(out):
        return [sys.executable, "-m", "bertkit", "distill", "--teacher", str(teacher), "--student", "tiny",
                "--train", str(path), "--dev", str(path), "--out", str(out), "--batch-size", "4", "--lr", "1e-3",
                "--max-steps", "24", "--save-every", "2", "--eval-every", "7", "--seed", "3", "--no-progress",
                "--hidden-weight", "1", "--attention-weight", "1", "--speed-repeats", "0",
                "--cache-dir", str(tmp_path / "cache")]

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run(cmd(whole))
    kill_at_random_moment(cmd(broken), broken, seed=5)
    r = run([*cmd(broken), "--resume"])
    assert "resumed from" in r.stderr, r.stderr[-2000:]
    assert_identical(whole, broken)
    assert (whole / "distillation.safetensors").read_bytes() == (broken / "distillation.safetensors").read_bytes()
