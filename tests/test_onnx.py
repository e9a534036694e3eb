"""ONNX export (parity with PyTorch under ONNX Runtime on new shapes), int8 on both backends, and the CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import require_module
from clihelp import run_cli as run

import bertkit
from bertkit import BertConfig
from bertkit.errors import UserError

require_module("onnxruntime")
from bertkit.inference.onnx import OnnxModel, export_onnx, quantize_int8  # noqa: E402

HEADS = {
    "BertForSequenceClassification": ("logits",),
    "BertForTokenClassification": ("logits",),
    "BertForQuestionAnswering": ("start_logits", "end_logits"),
    "BertModel": ("last_hidden_state", "pooler_output"),
}


def tiny(directory: Path, arch: str, labels=("neg", "neutral", "pos")) -> Path:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    config.id2label = dict(enumerate(labels))
    getattr(bertkit, arch)(config).save_pretrained(directory)
    bertkit.BertTokenizer.from_pretrained("all-MiniLM-L6-v2").save_pretrained(directory)
    return directory


def batch(tokenizer) -> dict[str, torch.Tensor]:
    """Three inputs with padding, a pair among them, and a batch and length unlike the export's example."""
    texts = ["Short.", "A much longer sentence, which makes the others carry padding in this batch.", "Third one"]
    enc = tokenizer(texts, ["", "with a pair", "and its pair"], padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


@pytest.mark.parametrize("arch", list(HEADS))
def test_onnx_runtime_matches_pytorch_on_new_shapes(tmp_path, arch):
    model_dir = tiny(tmp_path / "m", arch)
    path = export_onnx(model_dir, tmp_path / "m.onnx")
    model = getattr(bertkit, arch).from_pretrained(model_dir).eval()
    inputs = batch(bertkit.BertTokenizer.from_pretrained(model_dir))
    assert inputs["input_ids"].shape[0] != 2
    onnx = OnnxModel(path)
    assert onnx.inputs == ["input_ids", "attention_mask", "token_type_ids"] and tuple(onnx.outputs) == HEADS[arch]
    got = onnx(**inputs)
    with torch.inference_mode():
        expected = model(**inputs)
    for name in HEADS[arch]:
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch, labels, inputs", [
    ("BertForTokenClassification", ("O", "B-PER", "I-PER", "B-LOC", "I-LOC"),
     ["Peter Blackburn lives in Brussels.", "Ein Satz"]),
    ("BertForQuestionAnswering", ("LABEL_0", "LABEL_1"),
     [{"question": "Who wrote Hamlet?", "context": "Hamlet is a tragedy written by William Shakespeare."},
      {"question": "When?", "context": "Between 1599 and 1601, in London."}]),
])
def test_pipelines_answer_the_same_on_onnx(tmp_path, arch, labels, inputs, monkeypatch):
    monkeypatch.setenv("BERTKIT_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = tiny(tmp_path / "m", arch, labels)
    torch_results = bertkit.pipeline(model=str(model_dir))(inputs)
    onnx_results = bertkit.pipeline(model=str(model_dir), backend="onnx")(inputs)
    def flat(results):  # NER: a list of entities per input; QA: one answer per input
        return [r for result in results for r in (result if isinstance(result, list) else [result])]

    for a, b in zip(flat(torch_results), flat(onnx_results), strict=True):
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_int8_backends_stay_close_and_shrink_the_file(tmp_path):
    model_dir = tiny(tmp_path / "m", "BertForSequenceClassification")
    fp32, int8 = export_onnx(model_dir, tmp_path / "fp32.onnx"), export_onnx(model_dir, tmp_path / "int8.onnx", int8=True)
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size  # the embedding matrices are quantized too
    inputs = batch(bertkit.BertTokenizer.from_pretrained(model_dir))
    model = bertkit.BertForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        expected = model(**inputs).logits
        quantized = quantize_int8(bertkit.BertForSequenceClassification.from_pretrained(model_dir))
        torch_int8 = quantized(**inputs).logits
    assert isinstance(quantized.bert.encoder.layer[0].intermediate.dense, torch.ao.nn.quantized.dynamic.Linear)
    onnx_int8 = OnnxModel(int8)(**inputs).logits
    spread = float(expected.abs().max())
    for got in (torch_int8, onnx_int8):
        diff = float((got - expected).abs().max())
        assert 0 < diff < 0.05 * spread  # changed by the rounding, but not by much


@pytest.mark.slow  # an export and four CLI runs, about a minute: `make test-slow`, run by CI
def test_cli_export_then_predict_and_evaluate_on_either_backend(tmp_path):
    model_dir = tiny(tmp_path / "clf", "BertForSequenceClassification")
    out = json.loads(run("export", "onnx", "--model", model_dir).stdout)
    assert out["onnx"] == str(model_dir / "model.onnx") and not out["int8"]
    texts = ["a wonderful film", "a boring film that goes on and on", "fine"]
    results = {}
    cache = {"BERTKIT_CACHE_DIR": str(tmp_path / "cache")}
    for flags in ([], ["--backend", "onnx"], ["--backend", "onnx", "--int8"]):
        lines = run("predict", "--model", model_dir, *texts, "--top-k", "all", *flags, env=cache).stdout.splitlines()
        # one line per text: every label with its score, best first -> {label: score}
        results[" ".join(flags)] = [{r["label"]: r["score"] for r in json.loads(line)} for line in lines]
    # the int8 graph was exported once into the cache, not into the model folder
    assert not (model_dir / "model_int8.onnx").exists() and len(list((tmp_path / "cache").rglob("model_int8.onnx"))) == 1
    torch_rows, onnx_rows = results[""], results["--backend onnx"]
    assert len(onnx_rows) == len(texts)
    for a, b in zip(torch_rows, onnx_rows):
        assert max(a, key=a.get) == max(b, key=b.get) and a == pytest.approx(b, abs=1e-4)
    int8_rows = results["--backend onnx --int8"]
    assert all(r == pytest.approx(t, abs=0.05) for r, t in zip(int8_rows, torch_rows))
    gold = ["pos", "neg", "neutral"]
    data = tmp_path / "dev.tsv"
    data.write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in zip(texts, gold)))
    metrics = json.loads(run("evaluate", "--model", model_dir, "--data", data, "--backend", "onnx")
                         .stdout.splitlines()[-1])
    assert metrics["accuracy"] == pytest.approx(100 * sum(max(r, key=r.get) == g for r, g in zip(torch_rows, gold)) / 3)


def test_export_and_backend_errors_are_one_line(tmp_path):
    r = run("export", "onnx", "--model", tmp_path / "missing", check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "missing" in r.stderr
    model_dir = tiny(tmp_path / "clf", "BertForSequenceClassification")
    (model_dir / "model.onnx").write_bytes(b"not a graph")
    r = run("predict", "--model", model_dir, "hello", "--backend", "onnx", check=False)
    assert r.returncode == 2 and "model.onnx: not a loadable ONNX model" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(UserError, match="CPU only"):
        bertkit.pipeline(model=str(model_dir), backend="onnx", device="cuda")
