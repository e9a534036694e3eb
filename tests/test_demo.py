"""`bertkit demo`, the main job, on a budget of seconds: it trains, evaluates on SST-2 dev, classifies the seed's
sentence, and leaves a model that `predict` uses."""

from __future__ import annotations

import json

import pytest
from clihelp import DATA, run_cli as run


@pytest.mark.skipif(not (DATA / "sst2").is_dir(), reason="no shared data")
def test_demo_trains_evaluates_classifies_and_leaves_a_model(tmp_path):
    out = tmp_path / "demo"
    r = run("demo", "--minutes", 0.1, "--out", out)
    report = json.loads((out / "demo_report.json").read_text())
    assert report["steps"] > 0 and set(report["sst2_dev"]) == {"accuracy", "f1", "mcc"}
    texts = [p["text"] for p in report["predictions"]]
    assert texts[0] == "I love this movie!" and all(p["label"] in ("positive", "negative") for p in report["predictions"])
    assert f"SST-2 dev: accuracy {report['sst2_dev']['accuracy']:.2f}" in r.stdout
    # the report's figures are what `evaluate` and `predict` find on the model it leaves
    metrics = json.loads(run("evaluate", "--model", out, "--dataset", "sst2").stdout.splitlines()[-1])
    assert metrics == pytest.approx(report["sst2_dev"], abs=0.01)
    again = json.loads(run("predict", "--model", out, "I love this movie!").stdout)
    assert again["label"] == report["predictions"][0]["label"]
    assert again["score"] == pytest.approx(report["predictions"][0]["score"], abs=1e-5)
