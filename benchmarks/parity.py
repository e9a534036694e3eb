"""Max |bertkit - transformers| for every head on the all-MiniLM-L6-v2 weights (random heads shared through a save),
on real tokenised sentence pairs with padding: outputs, loss and gradients. Prints one JSON object.

    python benchmarks/parity.py
"""

from __future__ import annotations

import json
import tempfile

import torch
import transformers

import bertkit
from bertkit.checkpoint import resolve_model_dir

transformers.logging.set_verbosity_error()
PATH = str(resolve_model_dir("all-MiniLM-L6-v2"))
HEADS = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForNextSentencePrediction",
         "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
         "BertForMultipleChoice"]


def labels_for(head, batch):
    B, L = batch["input_ids"].shape[-2:] if head != "BertForMultipleChoice" else batch["input_ids"].shape[:2]
    g = torch.Generator().manual_seed(0)
    mlm = torch.where(torch.rand(batch["input_ids"].shape, generator=g) < 0.15, batch["input_ids"], -100)
    return {
        "BertForPreTraining": {"labels": mlm, "next_sentence_label": torch.tensor([0, 1, 0, 1])},
        "BertForMaskedLM": {"labels": mlm},
        "BertForNextSentencePrediction": {"labels": torch.tensor([0, 1, 0, 1])},
        "BertForSequenceClassification": {"labels": torch.tensor([0, 1, 1, 0])},
        "BertForTokenClassification": {"labels": torch.where(batch["attention_mask"].bool(), mlm.clamp(0, 1), -100)},
        "BertForQuestionAnswering": {"start_positions": torch.tensor([1, 2, 3, 4]), "end_positions": torch.tensor([2, 3, 4, 5])},
        "BertForMultipleChoice": {"labels": torch.tensor([0, 1])},
    }.get(head, {})


def main():
    tok = bertkit.BertTokenizer.from_pretrained(PATH)
    batch = tok(["I love this movie!", "The stock market fell sharply today.", "A man plays guitar.", "Hi"],
                ["It was great.", "Investors were worried about rates.", "Music.", "Hello there, how are you?"],
                padding=True, return_tensors="pt")
    batch = dict(batch)
    report = {}
    for head in HEADS:
        inputs = {k: v.view(2, 2, -1) for k, v in batch.items()} if head == "BertForMultipleChoice" else batch
        kw = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        torch.manual_seed(0)
        hf = getattr(transformers, head).from_pretrained(PATH, **kw)
        with tempfile.TemporaryDirectory() as d:
            hf.save_pretrained(d)
            ours = getattr(bertkit, head).from_pretrained(d)
        labels = labels_for(head, inputs)
        a, b = ours(**inputs, **labels), hf(**inputs, **labels)
        fields = [k for k in a.keys() if k not in ("loss", "mlm_loss", "nsp_loss") and torch.is_tensor(a[k])]
        entry = {"outputs": max((a[k] - b[k]).abs().max().item() for k in fields)}
        if labels:
            entry["loss"] = abs(a.loss.item() - b.loss.item())
            a.loss.backward()
            b.loss.backward()
            theirs = dict(hf.named_parameters())
            entry["grads"] = max((p.grad - theirs[n].grad).abs().max().item()
                                 for n, p in ours.named_parameters() if n in theirs and p.grad is not None)
        report[head] = entry
    report["worst"] = max(v for e in report.values() for v in e.values())
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
