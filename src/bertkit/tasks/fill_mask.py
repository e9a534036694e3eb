"""fill-mask: the likeliest tokens at each [MASK] of a text, from any checkpoint with an MLM head
(`bertkit pretrain` output, BertForMaskedLM); evaluation is masked-token accuracy on held-out text."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bertkit.errors import UserError
from bertkit.tasks import register
from bertkit.tasks.base import Task
from bertkit.tasks.common import run_model


class AtMasks:
    """forward(model, inputs) -> per row, (n_masks, V) logits of a masked LM at that row's [MASK] positions."""

    def __init__(self, mask_id: int):
        self.mask_id = mask_id

    def __call__(self, model, inputs: dict) -> list[torch.Tensor]:
        hidden = model.bert(**inputs).last_hidden_state  # (B, L, H)
        where = inputs["input_ids"] == self.mask_id  # (B, L)
        logits = model.cls.predictions(hidden[where])  # (n_masks in batch, V)
        return list(logits.split(where.sum(1).tolist()))

    def __eq__(self, other):
        return isinstance(other, AtMasks) and other.mask_id == self.mask_id

    def __hash__(self):
        return self.mask_id


@register
class FillMaskTask(Task):
    name = "fill-mask"
    model_class_name = "BertForMaskedLM"
    architectures = ("BertForMaskedLM", "BertForPreTraining")
    main_metric = "accuracy"

    @classmethod
    def read(cls, path, data) -> list[str]:
        """Plain text, one sequence a line (blank lines skipped)."""
        from bertkit.tasks.readers import numbered_lines, read_text

        return [line for _, line in numbered_lines(read_text(path)) if line.strip()]

    def masked_logits(self, model, rows: Sequence[dict], batch_size: int = 64) -> list[torch.Tensor]:
        """Per row, (n_masks, V) logits at its [MASK] positions: the vocabulary projection runs there only."""
        return run_model(model, rows, self.collate, batch_size, forward=AtMasks(self.tokenizer.mask_token_id))

    def encode(self, texts: Sequence[str]) -> list[dict]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return [{"input_ids": ids, "token_type_ids": types} for ids, types in
                zip(enc["input_ids"], enc["token_type_ids"])]

    def _target_ids(self, targets) -> list[int]:
        """A target's token id (a word of several pieces counts as its first, as transformers does)."""
        ids = []
        for target in [targets] if isinstance(targets, str) else targets:
            token = self.tokenizer.convert_tokens_to_ids(target)
            pieces = [token] if token != self.tokenizer.unk_token_id else \
                self.tokenizer(target, add_special_tokens=False)["input_ids"]
            if pieces:  # as transformers: a target with no token at all is left out
                ids.append(pieces[0])
        if not ids:
            raise UserError(f"fill-mask: targets={targets!r}: none of them is a token of the vocabulary")
        return list(dict.fromkeys(ids))

    def predict(self, model, texts, batch_size: int = 64, top_k: int = 5, targets=None) -> list:
        """As transformers' fill-mask pipeline: per [MASK], the `top_k` tokens (among `targets` when given) with
        their probability (softmax over the vocabulary) and the text with that token in place; a text with
        several [MASK]s gets a list per mask."""
        if not isinstance(top_k, int) or top_k < 1:
            raise UserError(f"fill-mask: top_k={top_k!r}; expected a number of tokens, at least 1")
        rows = self.encode(texts)
        mask_id = self.tokenizer.mask_token_id
        for n, row in enumerate(rows, 1):
            if mask_id not in row["input_ids"]:
                raise UserError(f"input {n}: no {self.tokenizer.mask_token} token in {texts[n - 1]!r:.80}")
        target_ids = torch.tensor(self._target_ids(targets)) if targets is not None else None
        k = min(top_k, len(target_ids)) if target_ids is not None else top_k
        results = []
        for row, logits in zip(rows, self.masked_logits(model, rows, batch_size)):
            probs = logits.softmax(-1)  # (n_masks, V)
            if target_ids is not None:
                probs = probs[:, target_ids]
            positions = [t for t, i in enumerate(row["input_ids"]) if i == mask_id]
            single = len(positions) == 1
            per_mask = []
            for position, p in zip(positions, probs):
                values, order = p.topk(k)
                ids = target_ids[order] if target_ids is not None else order
                candidates = []
                for score, token in zip(values.tolist(), ids.tolist()):
                    filled = list(row["input_ids"])
                    filled[position] = token
                    candidates.append({"score": score, "token": token, "token_str": self.tokenizer.decode([token]),
                                       "sequence": self.tokenizer.decode(filled, skip_special_tokens=single)})
                per_mask.append(candidates)
            results.append(per_mask[0] if single else per_mask)
        return results

    def evaluate(self, model, examples, features=None, batch_size: int = 64) -> dict[str, float]:
        """Masked-token accuracy and perplexity on texts, 15% of each text's tokens masked (all [MASK], drawn from
        a fixed seed so evaluations compare)."""
        generator = torch.Generator().manual_seed(0)
        mask_id, specials = self.tokenizer.mask_token_id, set(self.tokenizer.all_special_ids)
        rows, targets = [], []
        for row in self.encode(examples):
            ids = list(row["input_ids"])
            candidates = [t for t, i in enumerate(ids) if i not in specials]
            if not candidates:
                continue
            n = max(1, round(0.15 * len(candidates)))
            chosen = sorted(candidates[i] for i in torch.randperm(len(candidates), generator=generator)[:n].tolist())
            targets.append(torch.tensor([ids[t] for t in chosen]))
            for t in chosen:
                ids[t] = mask_id
            rows.append({"input_ids": ids, "token_type_ids": row["token_type_ids"]})
        if not rows:
            raise UserError("fill-mask evaluate: no text with a token to mask")
        logits = torch.cat(self.masked_logits(model, rows, batch_size))  # (N, V)
        gold = torch.cat(targets)
        loss = torch.nn.functional.cross_entropy(logits, gold).item()
        return {"accuracy": 100.0 * (logits.argmax(-1) == gold).float().mean().item(), "loss": loss,
                "perplexity": float(torch.tensor(loss).exp())}
