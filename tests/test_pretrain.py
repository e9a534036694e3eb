"""`bertkit tokenizer train` and `bertkit pretrain` end to end: exact resume after SIGKILL, DDP equivalence,
transformers compatibility of the output, and one-line errors for bad input."""

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
from clihelp import DATA, ENV, run_cli as run
import torch

CORPUS = DATA / "pretrain" / "en" / "state_union"
pytestmark = pytest.mark.needs_data("pretrain/en/state_union")  # skips where missing; fails under CI=true


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Six real speeches (valid UTF-8), enough documents for NSP and a held-out one."""
    d = tmp_path_factory.mktemp("corpus")
    for name in ["1945-Truman.txt", "1946-Truman.txt", "1961-Kennedy.txt", "1962-Kennedy.txt", "1964-Johnson.txt",
                 "1966-Johnson.txt"]:
        (d / name).write_bytes((CORPUS / name).read_bytes())
    return d


@pytest.fixture(scope="module")
def tokenizer_dir(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    r = run("tokenizer", "train", "--input", corpus, "--vocab-size", 1000, "--out", out)
    assert json.loads(r.stdout)["vocab_size"] == 1000
    return out


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    """A tiny config without dropout: processes with different dropout streams must still agree exactly."""
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)))
    return path


def pretrain_args(corpus, tokenizer_dir, out, cache, *extra, config="tiny", steps=12):
    return ["pretrain", "--input", corpus, "--tokenizer", tokenizer_dir, "--config", config, "--out", out,
            "--max-steps", steps, "--batch-size", 8, "--seq-len", 64, "--lr", 1e-3, "--save-every", 2,
            "--eval-every", 5, "--log-every", 1, "--cache-dir", cache, "--no-progress", "--keep-last", 50, *extra]


def train_losses(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def test_tokenizer_train_loads_in_transformers(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    from bertkit import BertTokenizer

    text = "The Congress of the United States, the economy, and our soldiers."
    ours = BertTokenizer.from_pretrained(tokenizer_dir)(text)
    theirs = transformers.BertTokenizerFast.from_pretrained(tokenizer_dir)(text)
    assert ours["input_ids"] == theirs["input_ids"] and ours["input_ids"][0] == 2  # [CLS] id in a trained vocab
    assert BertTokenizer.from_pretrained(tokenizer_dir).unk_token_id not in ours["input_ids"]


@pytest.mark.slow  # minutes on 2 cores: `make test-slow`, which CI runs after `make test`
def test_sigkill_and_resume_is_bit_identical(corpus, tokenizer_dir, tmp_path):
    cache = tmp_path / "cache"
    whole = tmp_path / "whole"
    run(*pretrain_args(corpus, tokenizer_dir, whole, cache))
    broken = tmp_path / "broken"
    proc = subprocess.Popen([sys.executable, "-m", "bertkit", *map(str, pretrain_args(corpus, tokenizer_dir, broken,
                                                                                         cache))], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (broken / "checkpoints" / "step-00000004").exists():  # wait for a checkpoint, then kill at a random moment
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(random.uniform(0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (broken / "model.safetensors").exists(), "killed too late: the run had finished"
    run(*pretrain_args(corpus, tokenizer_dir, broken, cache, "--resume"))
    assert (broken / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    assert train_losses(broken) == train_losses(whole)


@pytest.mark.slow  # minutes on 2 cores: `make test-slow`, which CI runs after `make test`
def test_two_processes_match_one_with_double_batch(corpus, tokenizer_dir, config_file, tmp_path):
    cache = tmp_path / "cache"
    one = tmp_path / "one"
    args = pretrain_args(corpus, tokenizer_dir, one, cache, config=config_file, steps=4)
    args[args.index("--batch-size") + 1] = 16
    run(*args)
    two = tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(29500 + os.getpid() % 1000), "-m", "bertkit"]
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*torchrun, *map(str, pretrain_args(corpus, tokenizer_dir, two, cache, config=config_file,
                                                           steps=4))], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = train_losses(one), train_losses(two)
    assert len(a) == len(b) == 4
    assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-5, (a, b)


def test_output_loads_in_transformers_with_identical_outputs(corpus, tokenizer_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    from bertkit import BertForPreTraining, BertTokenizer

    out = tmp_path / "out"
    run(*pretrain_args(corpus, tokenizer_dir, out, tmp_path / "cache", steps=3))
    hf = transformers.BertForPreTraining.from_pretrained(out).eval()
    ours = BertForPreTraining.from_pretrained(out)
    batch = BertTokenizer.from_pretrained(out)(["The state of the union is strong."], ["We will act."],
                                              return_tensors="pt")
    with torch.no_grad():
        a, b = ours(**batch), hf(**batch)
    torch.testing.assert_close(a.prediction_logits, b.prediction_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.seq_relationship_logits, b.seq_relationship_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "no text"),
        (b"\x00\x01\x02binary", "binary file"),
        (b"caf\xe9 au lait. Second sentence here.\n", "not UTF-8"),
    ],
)
def test_bad_input_is_one_line_exit_2(content, message, tokenizer_dir, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    r = run(*pretrain_args(bad, tokenizer_dir, tmp_path / "out", tmp_path / "cache"), check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr and str(bad) in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_vocab_mismatch_is_one_line_exit_2(corpus, tokenizer_dir, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(dict(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                   intermediate_size=64)))
    r = run(*pretrain_args(corpus, tokenizer_dir, tmp_path / "out", tmp_path / "cache", config=cfg), check=False)
    assert r.returncode == 2 and "does not match the tokenizer" in r.stderr and len(r.stderr.strip().splitlines()) == 1
