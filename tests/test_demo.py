"""`bertkit demo`, the main job, on a budget of seconds: it trains, evaluates on SST-2 dev, classifies the seed's
sentence, and leaves a model that `predict` uses."""

from __future__ import annotations

import json

import pytest
from clihelp import run_cli as run


@pytest.mark.slow  # 80 s on 2 cores: `make test-slow` (CI runs it)
@pytest.mark.needs_data("sst2")
def test_demo_trains_evaluates_classifies_and_leaves_a_model(tmp_path):
    out = tmp_path / "demo"
    r = run("demo", "--minutes", 0.1, "--out", out)
    report = json.loads((out / "demo_report.json").read_text())
    assert report["steps"] > 0 and set(report["sst2_dev"]) == {"accuracy", "f1", "mcc"}
    assert report["train_examples_seen"] == 32 * report["steps"]  # batches of 32, no accumulation
    dev = report["sst2_dev"]
    assert 0 <= dev["accuracy"] <= 100 and 0 <= dev["f1"] <= 100 and -100 <= dev["mcc"] <= 100  # percent
    texts = [p["text"] for p in report["predictions"]]
    assert texts == ["I love this movie!", "A dull, lifeless film that wastes its talented cast.",
                     "The plot was thin, but the performances were wonderful.", "I would not recommend it to anyone."]
    # each label is the likelier of the two: its probability is at least one half
    assert all(p["label"] in ("positive", "negative") and 0.5 <= p["score"] <= 1 for p in report["predictions"])
    assert f"SST-2 dev: accuracy {dev['accuracy']:.2f}" in r.stdout
    # the report's figures are what `evaluate` and `predict` find on the model it leaves
    metrics = json.loads(run("evaluate", "--model", out, "--dataset", "sst2").stdout.splitlines()[-1])
    assert metrics == pytest.approx(dev, abs=0.01)
    again = [json.loads(line) for line in run("predict", "--model", out, *texts).stdout.splitlines()]
    assert [a["label"] for a in again] == [p["label"] for p in report["predictions"]]
    assert [a["score"] for a in again] == pytest.approx([p["score"] for p in report["predictions"]], abs=1e-5)
