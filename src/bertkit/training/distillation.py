"""Task-specific knowledge distillation: the losses, the objective the training loop runs, the student under
training, and the teacher's outputs computed once and cached.

Losses (each summed; the loop divides by the global batch's counts):
- soft targets (Hinton et al. 2015): KL(teacher || student) of the softmax at temperature T, times T^2 so the
  gradients keep their scale as T changes; per row (classification), per real token (token classification), per
  window for the start and the end distributions (QA); MSE of the scores for regression; for multi-label, the
  binary cross-entropy against the teacher's sigmoid at T.
- hidden states (TinyBERT): MSE between student layer j and teacher layer j*N/K, through a learned projection
  when the widths differ.
- self-attention relations (MiniLMv2): the queries, keys and values of one layer, each split into R relation heads
  whatever the model's own head count, give softmax(x x^T / sqrt(d)) per head; KL from the teacher's to the
  student's, so students with other widths and head counts learn from any teacher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit.errors import UserError

logger = logging.getLogger("bertkit")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
QKV = ("query", "key", "value")


# ---- losses: pure functions, each summed over what it is averaged over -------------------------------------------


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """sum over rows of KL(softmax(t / T) || softmax(s / T)) * T^2; (N, C) logits of both."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="sum") * temperature**2


def soft_bce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Multi-label: per row, the mean over labels of BCE(sigmoid(s / T), sigmoid(t / T)), summed, times T^2."""
    target = torch.sigmoid(teacher_logits.float() / temperature)
    per_label = F.binary_cross_entropy_with_logits(student_logits.float() / temperature, target, reduction="none")
    return per_label.mean(-1).sum() * temperature**2


def score_mse(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """Regression: the summed squared difference of the scores, (N, 1) or (N,) each."""
    return F.mse_loss(student_scores.float().reshape(-1), teacher_scores.float().reshape(-1), reduction="sum")


def masked_soft_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
                   ) -> torch.Tensor:
    """Distributions over the real positions of each row: (B, L) logits, (B, L) mask (1 = token). Padding takes
    no probability on either side. Summed over rows."""
    keep = mask.bool()
    lowest = torch.finfo(torch.float32).min
    s = student.float().masked_fill(~keep, lowest)
    t = teacher.float().masked_fill(~keep, lowest)
    log_s, log_t = F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1)
    per_position = torch.where(keep, log_t.exp() * (log_t - log_s), 0.0)  # (B, L)
    return per_position.sum() * temperature**2


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum over real tokens of the mean over dimensions of the squared difference; (B, L, H) each (the student's
    already projected to the teacher's width), (B, L) mask."""
    per_token = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(-1)  # (B, L)
    return (per_token * mask).sum()


def relation_log_probs(x: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """MiniLMv2 self-attention relations: (B, L, H) vectors (queries, keys or values of one layer), split into
    `heads` relation heads of H / heads dimensions -> (B, heads, L, L) log softmax(x_r x_r^T / sqrt(d)) over the
    real positions."""
    B, L, H = x.shape
    if H % heads:
        raise UserError(f"--relation-heads {heads} does not divide the hidden width {H}")
    xr = x.float().view(B, L, heads, H // heads).transpose(1, 2)  # (B, R, L, d)
    scores = xr @ xr.transpose(-1, -2) / (H // heads) ** 0.5  # (B, R, L, L)
    scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(torch.float32).min)
    return F.log_softmax(scores, dim=-1)


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """sum over relation heads and real query positions of KL(teacher relation || student relation); (B, L, Hs)
    and (B, L, Ht) vectors, any widths that `heads` divides."""
    log_s, log_t = relation_log_probs(student, mask, heads), relation_log_probs(teacher, mask, heads)
    keys = mask.bool()[:, None, None, :]
    per_query = torch.where(keys, log_t.exp() * (log_t - log_s), 0.0).sum(-1)  # (B, R, L)
    return (per_query * mask[:, None, :]).sum()


def spread_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layers a K-layer student starts from, spread as DistilBERT does (one layer in two for half
    the depth): [i * N // K]; 6 -> 3 gives [0, 2, 4], 12 -> 6 gives [0, 2, ..., 10]."""
    if not 1 <= student_layers <= teacher_layers:
        raise UserError(f"layers={student_layers}: the teacher has {teacher_layers} layers; choose 1 to "
                        f"{teacher_layers}")
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def layer_map(teacher_layers: int, student_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) hidden_states indices matched by the hidden-state loss: student layer j's output with
    teacher layer round(j * N / K)'s (TinyBERT's uniform mapping), j = 1..K."""
    return [(j, round(j * teacher_layers / student_layers)) for j in range(1, student_layers + 1)]


# ---- the student under training ---------------------------------------------------------------------------------


@contextmanager
def capture_qkv(model, layer: int | None):
    """Collect the query, key and value projections ((B, L, H) each) of encoder layer `layer` during a forward."""
    found: dict[str, torch.Tensor] = {}
    if layer is None:
        yield found
        return
    attention = model.bert.encoder.layer[layer].attention.self
    hooks = [getattr(attention, name).register_forward_hook(
        lambda module, args, output, name=name: found.__setitem__(name, output)) for name in QKV]
    try:
        yield found
    finally:
        for h in hooks:
            h.remove()


class Student(nn.Module):
    """The model being distilled, and what is trained with it but is not part of it: the projections of its
    hidden states to the teacher's width. Called like the model; with `distill=True` it also returns the mapped
    hidden states (projected) and the captured queries, keys and values. `save_pretrained` writes the model as
    any checkpoint, with the projections beside it in `distillation.safetensors` (transformers ignores it)."""

    def __init__(self, model, hidden_pairs: Sequence[tuple[int, int]] = (), teacher_width: int | None = None,
                 attention_layer: int | None = None):
        super().__init__()
        self.model = model
        self.hidden_pairs = list(hidden_pairs)
        width = model.config.hidden_size
        self.projections = nn.ModuleList(nn.Linear(width, teacher_width) for _ in self.hidden_pairs) \
            if self.hidden_pairs and teacher_width not in (None, width) else None
        self.attention_layer = attention_layer

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, distill: bool = False, **inputs):
        if not distill:
            return self.model(**inputs)
        with capture_qkv(self.model, self.attention_layer) as qkv:
            # hidden states (or attention) asked for: the classification head's [CLS]-only last layer is off
            out = self.model(**inputs, output_hidden_states=bool(self.hidden_pairs) or self.attention_layer is not None)
        hidden = [out.hidden_states[s] for s, _ in self.hidden_pairs]
        if self.projections is not None:
            hidden = [proj(h) for proj, h in zip(self.projections, hidden)]
        return out, hidden, qkv

    def save_pretrained(self, directory) -> Path:
        from safetensors.torch import save_file

        from bertkit.checkpoint import atomic_path

        path = self.model.save_pretrained(directory)
        if self.projections is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.projections.state_dict().items()}
            with atomic_path(Path(directory) / "distillation.safetensors") as tmp:
                save_file(state, str(tmp))
        return path

    def load_checkpoint_weights(self, directory: Path) -> None:
        """What `save_pretrained` wrote, back into the live modules (the training loop's resume)."""
        from safetensors.torch import load_file

        from bertkit.checkpoint import load_into_model

        load_into_model(self.model, directory)
        if self.projections is not None:
            self.projections.load_state_dict(load_file(str(Path(directory) / "distillation.safetensors")))


# ---- the teacher's outputs --------------------------------------------------------------------------------------


@torch.inference_mode()
def teacher_outputs(teacher, batch: dict, hidden_layers: Sequence[int] = (), attention_layer: int | None = None
                    ) -> dict[str, torch.Tensor]:
    """What the losses read from the teacher for one padded batch: `logits` ((B, C), or (B, L, C) per token) or
    `start_logits`/`end_logits` (B, L); `hidden{j}` (B, L, H), teacher layer hidden_layers[j]; `query`, `key`,
    `value` (B, L, H) of `attention_layer`."""
    inputs = {k: batch[k].to(teacher.device) for k in MODEL_INPUTS}
    with capture_qkv(teacher, attention_layer) as qkv:
        out = teacher(**inputs, output_hidden_states=bool(hidden_layers) or attention_layer is not None)
    found = {"start_logits": out.start_logits, "end_logits": out.end_logits} if hasattr(out, "start_logits") \
        else {"logits": out.logits}
    for j, t in enumerate(hidden_layers):
        found[f"hidden{j}"] = out.hidden_states[t]
    found.update(qkv)
    return {k: v.float().cpu() for k, v in found.items()}


def _per_token(key: str, t: torch.Tensor) -> bool:
    return not (key == "logits" and t.dim() == 2)  # classification logits are one row per example


class TeacherCache:
    """The teacher's outputs for every training feature, computed once (length-sorted batches, no padding to speak
    of) and kept as memory-mapped arrays in `directory/<key>/`, so the teacher costs one forward pass per example
    in all, whatever the number of epochs, and a resumed run reads the same values. `key` hashes the teacher's
    weights, the features' token ids and what is kept; a directory is written aside and renamed (a killed build
    leaves no half cache)."""

    def __init__(self, path: Path):
        self.path = path
        meta = json.loads((path / "meta.json").read_text())
        self.keys, self.per_token = meta["keys"], meta["per_token"]
        self.arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r") for k in self.keys}
        self.offsets = np.load(path / "offsets.npy")  # (N + 1,) token offsets of each feature

    @staticmethod
    def key(teacher_dir: Path, features: Sequence[dict], hidden_layers: Sequence[int],
            attention_layer: int | None) -> str:
        from bertkit.checkpoint import weights_file

        h = hashlib.sha256()
        weights = weights_file(Path(teacher_dir))
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        h.update(json.dumps([list(hidden_layers), attention_layer]).encode())
        for row in features:
            h.update(np.asarray(row["input_ids"], dtype=np.int32).tobytes() + b"|")
            h.update(np.asarray(row["token_type_ids"], dtype=np.int8).tobytes() + b"/")
        return h.hexdigest()[:16]

    @classmethod
    def build(cls, root: Path, key: str, teacher, features: Sequence[dict], collate: Callable,
              hidden_layers: Sequence[int] = (), attention_layer: int | None = None, batch_size: int = 64,
              progress: bool = True) -> TeacherCache:
        from tqdm.auto import tqdm

        from bertkit.tasks.common import length_sorted_batches

        final = root / key
        if (final / "meta.json").exists():
            logger.info("teacher outputs: reusing %s", final)
            return cls(final)
        tmp = root / f".{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        lengths = [len(f["input_ids"]) for f in features]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        arrays: dict[str, np.ndarray] = {}
        per_token: dict[str, bool] = {}
        teacher.eval()
        batches = list(length_sorted_batches(lengths, batch_size, max_tokens=16384))
        for idx in tqdm(batches, desc="teacher outputs", unit="batch", disable=not progress, dynamic_ncols=True):
            out = teacher_outputs(teacher, collate([features[i] for i in idx]), hidden_layers, attention_layer)
            for k, t in out.items():
                if k not in arrays:
                    per_token[k] = _per_token(k, t)
                    rows = int(offsets[-1]) if per_token[k] else len(features)
                    shape = (rows, *t.shape[(2 if per_token[k] else 1):])
                    arrays[k] = np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=np.float32, shape=shape)
                for row, i in enumerate(idx):
                    if per_token[k]:
                        arrays[k][offsets[i]: offsets[i + 1]] = t[row, : lengths[i]].numpy()
                    else:
                        arrays[k][i] = t[row].numpy()
        for a in arrays.values():
            a.flush()
        np.save(tmp / "offsets.npy", offsets)
        (tmp / "meta.json").write_text(json.dumps({"keys": sorted(arrays), "per_token": per_token,
                                                   "features": len(features)}))
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return cls(final)

    def batch(self, indices: Sequence[int], length: int) -> dict[str, torch.Tensor]:
        """The cached outputs of features `indices`, per-token ones zero-padded to `length` (the batch's)."""
        found = {}
        for k in self.keys:
            a = self.arrays[k]
            if not self.per_token[k]:
                found[f"teacher_{k}"] = torch.from_numpy(np.stack([a[i] for i in indices]))
                continue
            out = torch.zeros((len(indices), length, *a.shape[1:]), dtype=torch.float32)
            for row, i in enumerate(indices):
                start, end = self.offsets[i], self.offsets[i + 1]
                out[row, : end - start] = torch.from_numpy(np.array(a[start:end]))
            found[f"teacher_{k}"] = out
        return found

    def row(self, key: str, i: int) -> torch.Tensor:
        a = self.arrays[key]
        return torch.from_numpy(np.array(a[self.offsets[i]: self.offsets[i + 1]] if self.per_token[key] else a[i]))


# ---- the objective ----------------------------------------------------------------------------------------------


class DistillationObjective:
    """alpha * soft + (1 - alpha) * hard + hidden_weight * hidden MSE + attention_weight * relation KL, each a
    mean over what it is about (rows or tokens of the global batch). `hard` is the task's own objective (its
    head's loss on the labels); the teacher's outputs come in the batch as `teacher_*` (see `TeacherCache.batch`).
    """

    def __init__(self, hard, alpha: float = 0.5, temperature: float = 2.0, hidden_weight: float = 0.0,
                 attention_weight: float = 0.0, relation_heads: int = 12):
        self.check(alpha, temperature)
        self.hard, self.alpha, self.temperature = hard, alpha, temperature
        self.hidden_weight, self.attention_weight, self.relation_heads = hidden_weight, attention_weight, relation_heads
        self.weights = {"hard": 1 - alpha, "soft": alpha, "hidden": hidden_weight, "attention": attention_weight}

    @staticmethod
    def check(alpha: float, temperature: float) -> None:
        if not 0 <= alpha <= 1:
            raise UserError(f"--alpha {alpha}: expected a weight between 0 and 1")
        if temperature <= 0:
            raise UserError(f"--temperature {temperature}: expected a positive number")

    def _soft_count(self, batch: dict) -> float:
        if "teacher_logits" in batch and batch["teacher_logits"].dim() == 3:  # per token
            return float(batch["attention_mask"].sum())
        return float(batch["input_ids"].shape[0])

    def counts(self, batch: dict) -> dict[str, float]:
        counts = {"hard": self.hard.counts(batch)["loss"], "soft": self._soft_count(batch)}
        tokens = float(batch["attention_mask"].sum())
        hidden = sum(1 for k in batch if k.startswith("teacher_hidden"))
        if self.hidden_weight and hidden:
            counts["hidden"] = tokens * hidden
        if self.attention_weight and "teacher_query" in batch:
            counts["attention"] = tokens * self.relation_heads * len(QKV)
        return counts

    def soft_loss(self, out, batch: dict, config) -> torch.Tensor:
        mask = batch["attention_mask"]
        T = self.temperature
        if "teacher_start_logits" in batch:  # extractive QA: the start and the end distributions
            return (masked_soft_kl(out.start_logits, batch["teacher_start_logits"], mask, T)
                    + masked_soft_kl(out.end_logits, batch["teacher_end_logits"], mask, T)) / 2
        teacher = batch["teacher_logits"]
        if teacher.dim() == 3:  # token classification: every real token
            keep = mask.bool()
            return soft_kl(out.logits[keep], teacher[keep], T)
        if config.problem_type == "regression":
            return score_mse(out.logits, teacher)
        if config.problem_type == "multi_label_classification":
            return soft_bce(out.logits, teacher, T)
        return soft_kl(out.logits, teacher, T)

    def __call__(self, model, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        inputs = {k: batch[k] for k in MODEL_INPUTS + self.hard.label_keys}
        out, hidden, qkv = model(distill=True, **inputs, reduction="sum")
        config = (model.module if hasattr(model, "module") else model).config
        raw = {"hard": out.loss, "soft": self.soft_loss(out, batch, config)}
        mask = batch["attention_mask"]
        if self.hidden_weight and hidden:
            raw["hidden"] = sum(hidden_mse(h, batch[f"teacher_hidden{j}"], mask) for j, h in enumerate(hidden))
        if self.attention_weight and qkv:
            raw["attention"] = sum(relation_kl(qkv[n], batch[f"teacher_{n}"], mask, self.relation_heads) for n in QKV)
        stats = {f"{k}_loss": v.item() for k, v in raw.items()}  # unweighted sums, for the report
        if self.hard.correct:
            stats[self.hard.correct_name] = float(self.hard.correct(out, batch))
        return {k: self.weights[k] * v for k, v in raw.items()}, stats

    def report(self, sums: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
        r = {"loss": sum(sums[k] / max(counts[k], 1.0) for k in self.weights if k in counts and k in sums)}
        for k in self.weights:
            if k in counts and f"{k}_loss" in sums:
                r[f"{k}_loss"] = sums[f"{k}_loss"] / max(counts[k], 1.0)
        if self.hard.correct:
            r[self.hard.correct_name] = sums[self.hard.correct_name] / max(counts["hard"], 1.0)
        return r


def collate_with_teacher(collate: Callable, cache: TeacherCache) -> Callable:
    """The training loop's collate: the task's padded batch plus the cached teacher outputs of its rows."""
    def collate_rows(rows, indices, epoch):
        batch = collate(rows)
        batch.update(cache.batch(list(indices), batch["input_ids"].shape[1]))
        return batch

    return collate_rows

