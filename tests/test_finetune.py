"""`bertkit finetune / evaluate / predict` end to end for each task family on a tiny model, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clihelp import run_cli as run

import bertkit



def common(model, out, *extra):
    return ["finetune", "--model", model, "--out", out, "--batch-size", 8, "--lr", 1e-3, "--no-progress", *extra]


def test_text_classification_files_predict_and_evaluate(tiny_model, tmp_path):
    train = tmp_path / "train.tsv"
    rows = ["text\tlabel"] + [f"a great and wonderful film {i}\tpos" for i in range(24)] + \
           [f"a dull and boring film {i}\tneg" for i in range(24)]
    train.write_text("\n".join(rows) + "\n")
    out = tmp_path / "clf"
    r = run(*common(tiny_model, out, "--task", "text-classification", "--train", train, "--dev", train,
                    "--epochs", 10))
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["main_metric"] == "accuracy" and result["eval"]["accuracy"] == 100.0
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["architectures"] == ["BertForSequenceClassification"]
    lines = run("predict", "--model", out, "a wonderful film", "a boring film").stdout.splitlines()
    assert [json.loads(x)["label"] for x in lines] == ["pos", "neg"]
    metrics = json.loads(run("evaluate", "--model", out, "--data", train).stdout.splitlines()[-1])
    assert metrics["accuracy"] == 100.0 and set(metrics) == {"accuracy", "f1", "mcc"}
    # the Python pipeline gives the same answers
    classify = bertkit.pipeline("text-classification", model=str(out))
    assert classify("a boring film")[0]["label"] == "neg"  # transformers' shape: one string -> [{"label", "score"}]
    ranked = classify(["a boring film"], top_k=None)[0]
    assert [r["label"] for r in ranked] == ["neg", "pos"] and sum(r["score"] for r in ranked) == pytest.approx(1)
    # the Python API returns the same metrics as the command
    assert bertkit.evaluate(str(out), data=str(train)) == metrics


def test_regression_on_float_scores(tiny_model, tmp_path):
    train = tmp_path / "scores.jsonl"
    train.write_text("\n".join(json.dumps({"text": f"pair {i}", "text_pair": f"other {i}", "label": i % 5 + 0.5})
                               for i in range(32)) + "\n")
    r = run(*common(tiny_model, tmp_path / "reg", "--task", "text-classification", "--train", train, "--dev", train,
                    "--max-steps", 4))
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["main_metric"] == "spearman" and set(result["eval"]) == {"pearson", "spearman"}


@pytest.mark.needs_data("conll2003")
def test_token_classification_on_real_conll(tiny_model, tmp_path):
    out = tmp_path / "ner"
    r = run(*common(tiny_model, out, "--dataset", "conll2003", "--max-train-examples", 64, "--max-eval-examples", 32,
                    "--max-steps", 6))
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["main_metric"] == "f1" and {"precision", "recall", "f1"} <= set(result["eval"])
    text = "Peter Blackburn lives in Brussels."
    entities = json.loads(run("predict", "--model", out, text).stdout)
    assert isinstance(entities, list)
    for e in entities:
        assert set(e) == {"entity_group", "score", "word", "start", "end"}
        assert text[e["start"]:e["end"]].lower() == e["word"] and 0 <= e["score"] <= 1
    # every token (aggregation "none", as transformers' default) when asked
    tokens = json.loads(run("predict", "--model", out, text, "--aggregation-strategy", "none",
                            "--ignore-labels", "").stdout)
    pieces = bertkit.BertTokenizer.from_pretrained(out).tokenize(text)
    assert [t["word"] for t in tokens] == pieces and [t["index"] for t in tokens] == list(range(1, len(pieces) + 1))


@pytest.mark.needs_data("squad")
def test_question_answering_on_real_squad(tiny_model, tmp_path):
    out = tmp_path / "qa"
    r = run(*common(tiny_model, out, "--dataset", "squad", "--max-train-examples", 32, "--max-eval-examples", 16,
                    "--max-steps", 4, "--seq-len", 192, "--doc-stride", 64))
    result = json.loads(r.stdout.splitlines()[-1])
    assert set(result["eval"]) == {"exact_match", "f1"}
    saved = json.loads((out / "config.json").read_text())
    assert (saved["max_seq_length"], saved["doc_stride"], saved["version_2"]) == (192, 64, False)
    q = tmp_path / "q.jsonl"
    context = "Hamlet is a tragedy written by William Shakespeare between 1599 and 1601."
    q.write_text(json.dumps({"question": "Who wrote Hamlet?", "context": context}) + "\n")
    pred = json.loads(run("predict", "--model", out, "--input", q).stdout)
    assert context[pred["start"]:pred["end"]] == pred["answer"] and 0 <= pred["score"] <= 1


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.tsv", "text\tlabel\nfine\tpos\ntoo\tmany\tcolumns\n", "bad.tsv:3"),
        ("empty.tsv", "", "empty.tsv"),
        ("latin1.tsv", "text\tlabel\ncaf\xe9\tpos\n", "latin1.tsv:2"),
    ],
)
def test_bad_training_files_are_one_line_exit_2(tiny_model, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    r = run(*common(tiny_model, tmp_path / "out", "--task", "text-classification", "--train", path, "--max-steps", 1),
            check=False)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_skip_bad_rows_counts_and_unknown_dev_label(tiny_model, tmp_path):
    train = tmp_path / "train.tsv"
    good = "text\tlabel\n" + "".join(f"row {i}\t{'a' if i % 2 else 'b'}\n" for i in range(16))
    train.write_text(good + "broken\trow\textra\n")
    dev = tmp_path / "dev.tsv"
    dev.write_text("text\tlabel\nfine\ta\nodd\tc\n")
    args = common(tiny_model, tmp_path / "out", "--task", "text-classification", "--train", train, "--max-steps", 1)
    r = run(*args, check=False)
    assert r.returncode == 2 and "train.tsv:18: expected 2 columns, got 3" in r.stderr
    r = run(*args, "--skip-bad-rows")
    assert "skipped 1 bad rows" in r.stderr
    train.write_text(good)
    r = run(*args, "--dev", dev, check=False)
    assert r.returncode == 2 and "dev.tsv:3: unknown label 'c'" in r.stderr, r.stderr
    r = run(*args, "--dev", dev, "--skip-bad-rows")
    assert "skipped 1 rows with a bad label" in r.stderr


def test_answer_not_in_context_names_the_question(tiny_model, tmp_path):
    squad = {"data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "q1", "question": "Where is Paris?", "answers": [{"text": "Germany", "answer_start": 12}]}]}]}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(squad))
    r = run(*common(tiny_model, tmp_path / "out", "--task", "question-answering", "--train", path, "--max-steps", 1),
            check=False)
    assert r.returncode == 2 and "q1" in r.stderr and "bad.json" in r.stderr, r.stderr


def test_evaluate_rejects_a_model_of_another_task(tiny_model, tmp_path):
    r = run("evaluate", "--model", tiny_model, "--task", "text-classification", "--dataset", "sst2", check=False)
    assert r.returncode == 2 and "BertModel checkpoint, which cannot run text-classification" in r.stderr, r.stderr


def _pos_neg_file(path: Path, n: int = 24) -> Path:
    rows = ["text\tlabel"] + [f"a great and wonderful film {i}\tpos" for i in range(n)] + \
           [f"a dull and boring film {i}\tneg" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_final_model_is_kept_by_default_and_dev_never_chooses(tiny_model, tmp_path):
    train = _pos_neg_file(tmp_path / "train.tsv")
    out = tmp_path / "final"
    result = bertkit.finetune(out, str(tiny_model), "text-classification", train=str(train), dev=str(train),
                              max_steps=6, eval_every=2, batch_size=8, lr=1e-3, progress=False)
    assert result["selected_by"] == "final" and result["best"] is None and result["step"] == 6
    last = out / "checkpoints" / "step-00000006" / "model.safetensors"
    assert (out / "model.safetensors").read_bytes() == last.read_bytes()
    assert bertkit.evaluate(str(out), data=str(train)) == result["eval"]


def test_validation_fraction_selects_on_a_split_carved_from_train(tiny_model, tmp_path):
    train = _pos_neg_file(tmp_path / "train.tsv")
    dev = _pos_neg_file(tmp_path / "dev.tsv", 8)
    out = tmp_path / "selected"
    result = bertkit.finetune(out, str(tiny_model), "text-classification", train=str(train), dev=str(dev),
                              validation_fraction=0.25, max_steps=8, eval_every=2, batch_size=8, lr=1e-3,
                              progress=False, keep_last=10)
    assert result["selected_by"] == "validation (0.25 of train)"
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in evals if x["split"] == "eval"]
    best = max(evals, key=lambda x: x["accuracy"])  # the first of the best values: later ties do not replace it
    assert result["best"] == {"step": best["step"], "value": best["accuracy"]}
    # the kept model is that step's, and `eval` is its score on dev (which played no part in choosing it)
    kept = out / "checkpoints" / f"step-{best['step']:08d}" / "model.safetensors"
    assert (out / "model.safetensors").read_bytes() == kept.read_bytes()
    assert result["eval"] == bertkit.evaluate(str(out), data=str(dev))
    assert len(evals) == 4  # validation at steps 2, 4, 6, 8: 12 carved examples, the other 36 trained on


def test_evaluate_split_must_exist(tiny_model):
    r = run("evaluate", "--model", tiny_model, "--task", "feature-extraction", "--dataset", "stsb", "--split",
            "nosuch", check=False)
    assert r.returncode == 2 and "has no 'nosuch' split" in r.stderr and len(r.stderr.strip().splitlines()) == 1
