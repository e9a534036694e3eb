"""The training loop's parts: weight-decay groups, the schedule, LAMB, checkpoint listing, non-finite skipping."""

from __future__ import annotations

import math

import pytest
import torch

from bertkit import BertConfig, BertForPreTraining, UserError
from bertkit.training import Trainer, TrainingArgs
from bertkit.training.checkpointing import list_checkpoints
from bertkit.training.optim import Lamb, param_groups, resolve_warmup, warmup_linear_decay


def tiny_model():
    torch.manual_seed(0)
    return BertForPreTraining(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=32))


def test_no_weight_decay_on_biases_and_layernorm():
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.01
    assert no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} >= {"bert.embeddings.LayerNorm.weight", "cls.predictions.bias"}
    # the tied decoder weight is the embedding matrix: counted once
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_linear_decay():
    assert [round(warmup_linear_decay(s, 3, 10), 4) for s in range(11)] == [
        0.25, 0.5, 0.75, 1.0, round(6 / 7, 4), round(5 / 7, 4), round(4 / 7, 4), round(3 / 7, 4), round(2 / 7, 4),
        round(1 / 7, 4), 0.0]
    assert resolve_warmup(0.1, 1000) == 100 and resolve_warmup(250, 1000) == 250


def test_lamb_first_step_by_hand():
    """Step 1: m_hat = g, v_hat = g^2, update = g/(|g|+eps) + wd*w; w -= lr * ||w||/||update|| * update."""
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.5, -2.0])
    Lamb([w], lr=0.1, eps=0.0, weight_decay=0.1).step()
    update = torch.tensor([1.0, -1.0]) + 0.1 * torch.tensor([3.0, 4.0])  # [1.3, -0.6]
    expected = torch.tensor([3.0, 4.0]) - 0.1 * (5.0 / update.norm()) * update
    torch.testing.assert_close(w.detach(), expected)


class _Data(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return i


def _collate(items, idx, epoch):
    ids = torch.randint(5, 50, (len(items), 8), generator=torch.Generator().manual_seed(sum(idx) + epoch))
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": labels, "next_sentence_label": torch.zeros(len(items), dtype=torch.long)}


class _NaNObjective:
    """Delegates to the pretraining objective but poisons every loss from step `bad_from` on."""

    def __init__(self, bad_from):
        from bertkit.training.objectives import PretrainingObjective

        self.inner, self.calls, self.bad_from = PretrainingObjective(), 0, bad_from

    def counts(self, batch):
        return self.inner.counts(batch)

    def __call__(self, model, batch):
        self.calls += 1
        terms, stats = self.inner(model, batch)
        if self.calls >= self.bad_from:
            terms = {k: v * float("nan") for k, v in terms.items()}
        return terms, stats

    def report(self, sums, counts):
        return self.inner.report(sums, counts)


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path):
    model = tiny_model()
    args = TrainingArgs(out_dir=tmp_path, max_steps=20, batch_size=4, max_bad_steps=3, progress=False, log_every=1)
    trainer = Trainer(model, _Data(), _collate, _NaNObjective(bad_from=3), args)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(UserError, match="3 steps in a row had a non-finite loss"):
        trainer.train()
    assert trainer.state["skipped_steps"] == 3 and trainer.state["step"] == 5
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # the 2 good steps applied


def test_checkpoints_keep_last_k_and_ignore_partial_saves(tmp_path):
    model = tiny_model()
    args = TrainingArgs(out_dir=tmp_path, max_steps=7, batch_size=4, save_every=2, keep_last=2, progress=False)
    Trainer(model, _Data(), _collate, _NaNObjective(bad_from=10**9), args).train()
    (tmp_path / "checkpoints" / ".step-00000009.tmp").mkdir()  # what a kill during a save leaves behind
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000006", "step-00000007"]
    assert math.isfinite(sum(p.sum().item() for p in model.parameters()))
