"""The snippet in DEVELOPERS.md runs as written against a local checkpoint directory."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import bertkit
from bertkit.checkpoint import resolve_model_dir

ROOT = Path(__file__).resolve().parents[1]


def test_developers_md_snippet_runs_as_written(tmp_path):
    text = (ROOT / "DEVELOPERS.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "from bertkit import BertTokenizer, BertForSequenceClassification" in snippet
    # A local copy of the default checkpoint, as a user's own directory would be.
    local = tmp_path / "my-model"
    bertkit.BertModel.from_pretrained(resolve_model_dir("all-MiniLM-L6-v2")).save_pretrained(local)
    bertkit.BertTokenizer.from_pretrained("all-MiniLM-L6-v2").save_pretrained(local)
    scope = {"path_or_name": str(local)}
    exec(snippet, scope)
    assert scope["outputs"].logits.shape == (1, 2)
    model, enc = scope["model"], scope["tokenizer"]("I love this movie!", return_tensors="pt")
    assert not model.training  # from_pretrained gives eval mode: no dropout in the snippet's prediction
    with torch.no_grad():  # the encoder's weights are the checkpoint's, not a fresh initialisation
        torch.testing.assert_close(model.bert(**enc).last_hidden_state,
                                   bertkit.BertModel.from_pretrained(local).eval()(**enc).last_hidden_state)
        torch.testing.assert_close(scope["outputs"].logits, model(**enc).logits)
    assert scope["prediction"].dtype == torch.long
    assert scope["prediction"].tolist() == [int(scope["outputs"].logits[0].argmax())]
