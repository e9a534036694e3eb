"""Training objectives for the loop: summed losses (divided by global counts in the loop) and accuracy counts."""

from __future__ import annotations

import torch

from bertkit.modeling.heads import IGNORE_INDEX


class PretrainingObjective:
    """Masked-language modelling plus, when the batch has `next_sentence_label`, NSP (or SOP: same head)."""

    def counts(self, batch: dict) -> dict[str, float]:
        counts = {"mlm": float((batch["labels"] != IGNORE_INDEX).sum())}
        if "next_sentence_label" in batch:
            counts["nsp"] = float((batch["next_sentence_label"] != IGNORE_INDEX).sum())
        return counts

    def __call__(self, model, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        labels = batch["labels"]
        nsp = batch.get("next_sentence_label")
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            labels=labels,
            next_sentence_label=nsp,
            sparse_mlm=True,  # the vocabulary projection runs at masked positions only
            reduction="sum",  # the loop divides by the global batch's counts
        )
        targets = labels[labels != IGNORE_INDEX]  # (n_masked,), the row order of the sparse logits
        terms = {"mlm": out.mlm_loss}
        stats = {"mlm_correct": float((out.prediction_logits.argmax(-1) == targets).sum())}
        if nsp is not None:
            terms["nsp"] = out.nsp_loss
            stats["nsp_correct"] = float((out.seq_relationship_logits.argmax(-1) == nsp.reshape(-1)).sum())
        return terms, stats

    def report(self, sums: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
        r = {"mlm_loss": sums["mlm"] / max(counts["mlm"], 1.0), "mlm_acc": sums["mlm_correct"] / max(counts["mlm"], 1.0)}
        loss = r["mlm_loss"]
        if "nsp" in counts:
            r["nsp_loss"] = sums["nsp"] / max(counts["nsp"], 1.0)
            r["nsp_acc"] = sums["nsp_correct"] / max(counts["nsp"], 1.0)
            loss += r["nsp_loss"]
        return {"loss": loss, **r}
