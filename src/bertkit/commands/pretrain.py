"""`bertkit pretrain` as a Python function: raw text -> cached instances -> MLM + NSP (or SOP, or MLM only) with the
one training loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bertkit.config import load_config
from bertkit.errors import UserError
from bertkit.modeling import BertForPreTraining
from bertkit.training import Trainer, TrainingArgs
from bertkit.training.distributed import barrier, setup, teardown
from bertkit.training.objectives import PretrainingObjective

logger = logging.getLogger("bertkit")


@dataclass
class PretrainArgs:
    inputs: list[str]  # files or folders of raw text
    tokenizer: str  # a tokenizer directory (e.g. from `bertkit tokenizer train`)
    config: str  # a preset name or a config.json
    out_dir: Path
    training: TrainingArgs = None  # type: ignore[assignment]  # loop settings; out_dir is filled in
    seq_len: int = 128
    pair_task: str = "nsp"  # nsp | sop | none
    wwm: bool = False  # whole-word masking (## continuations; jieba words for Chinese)
    mlm_probability: float = 0.15
    max_predictions: int = 20  # masks per sequence at most (BERT: 20 at 128, 80 at 512)
    heldout: float = 0.05  # share of documents held out for evaluation (at least one when there are two)
    eval_instances: int = 1000  # evaluation uses at most this many held-out instances
    cache_dir: str | None = None
    resume: str | None = None  # "auto" (latest under out_dir) or a checkpoint path
    data_workers: int | None = None
    utf8_errors: str = "strict"  # "replace": drop bytes that are not UTF-8 (with a warning) instead of stopping
    extra: dict = field(default_factory=dict)


def _heldout_split(data, fraction: float, seed: int):
    n_docs = len(data.documents)
    if n_docs < 2 or fraction <= 0:
        logger.warning("one document only: no held-out evaluation (give more files or blank-line separated text)")
        return data, None
    count = min(n_docs - 1, max(1, round(fraction * n_docs)))
    return data.split_heldout(count, seed=seed)


def make_evaluate(heldout, collator, objective, batch_size: int, limit: int, device: torch.device):
    """Held-out MLM loss/accuracy and NSP accuracy, with masks fixed (epoch 0) so numbers compare across steps."""
    n = min(len(heldout), limit)

    def evaluate(model) -> dict[str, float]:
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for start in range(0, n, batch_size):
            batch = collator([heldout[i] for i in range(start, min(n, start + batch_size))], epoch=0)
            batch = {k: v.to(device) for k, v in batch.items()}
            for k, v in objective.counts(batch).items():
                counts[k] = counts.get(k, 0.0) + v
            terms, stats = objective(model, batch)
            for k, v in [*((k, t.item()) for k, t in terms.items()), *stats.items()]:
                sums[k] = sums.get(k, 0.0) + v
        return objective.report(sums, counts)

    return evaluate


def run_pretraining(a: PretrainArgs) -> dict:
    from bertkit.data.dataset import build_or_load
    from bertkit.data.masking import MaskingCollator
    from bertkit.data.pretraining import PretrainingSettings
    from bertkit.tokenization import BertTokenizer

    dist, device = setup()
    try:
        tokenizer = BertTokenizer.from_pretrained(a.tokenizer)
        config = _model_config(a.config, len(tokenizer), a.seq_len)
        settings = PretrainingSettings(
            max_seq_len=a.seq_len, pair_task=a.pair_task, seed=a.training.seed, utf8_errors=a.utf8_errors
        )
        # Rank 0 builds the cache; the others wait and then read it (no two processes write one cache).
        if dist.is_main:
            data = build_or_load(a.inputs, tokenizer.backend_tokenizer, a.cache_dir, settings, a.data_workers)
        barrier()
        if not dist.is_main:
            data = build_or_load(a.inputs, tokenizer.backend_tokenizer, a.cache_dir, settings, a.data_workers)
        train_data, heldout = _heldout_split(data, a.heldout, a.training.seed)
        if dist.is_main:
            logger.info("%d training instances, %d held out", len(train_data), len(heldout) if heldout else 0)
        collator = MaskingCollator.from_tokenizer(
            tokenizer.backend_tokenizer, mlm_probability=a.mlm_probability, wwm=a.wwm,
            max_predictions=a.max_predictions, seed=a.training.seed,
        )
        torch.manual_seed(a.training.seed)
        model = BertForPreTraining(config)
        objective = PretrainingObjective()
        evaluate = None
        if heldout is not None:
            evaluate = make_evaluate(heldout, collator, objective, a.training.batch_size, a.eval_instances, device)
        a.training.out_dir = a.out_dir
        trainer = Trainer(
            model, train_data, lambda items, idx, epoch: collator(items, epoch), objective, a.training, dist, device,
            evaluate=evaluate, save_extra=tokenizer.save_pretrained,
        )
        trainer.start_or_resume(a.resume)
        return trainer.train()
    finally:
        teardown()


def _model_config(preset_or_file: str, vocab_size: int, seq_len: int):
    from bertkit.config import PRESETS

    if preset_or_file in PRESETS:
        config = load_config(preset_or_file, vocab_size=vocab_size)
    else:
        config = load_config(preset_or_file)
        if config.vocab_size != vocab_size:
            raise UserError(
                f"--config {preset_or_file}: vocab_size {config.vocab_size} does not match the tokenizer's "
                f"{vocab_size} tokens (--tokenizer)"
            )
    if seq_len > config.max_position_embeddings:
        raise UserError(f"--seq-len {seq_len} exceeds the config's max_position_embeddings "
                        f"{config.max_position_embeddings}")
    return config


def pretrain(input: str | list[str], tokenizer: str, config: str, out: str | Path, *, max_steps: int | None = None,
             max_time: float | None = None, seq_len: int = 128, pair_task: str = "nsp", wwm: bool = False,
             heldout: float = 0.05, cache_dir: str | None = None, resume: str | None = None,
             utf8_errors: str = "strict", lr: float = 1e-4, batch_size: int = 32, save_every: int = 500,
             eval_every: int = 500, **training) -> dict:
    """Pretrain a `config` (a preset name or a config.json) with `tokenizer` on the text files or folders of
    `input`, into `out` (a BertForPreTraining checkpoint). `pair_task`: "nsp", "sop" or "none" (MLM only). Other
    keywords are the training loop's settings (`TrainingArgs`). Returns the loop's summary with `out_dir`."""
    if max_steps is None and max_time is None:
        raise UserError("pretrain: give --max-steps, --max-time or both")
    if pair_task not in ("nsp", "sop", "none"):
        raise UserError(f"pair_task={pair_task!r}: expected nsp, sop or none")
    out = Path(out)
    args = TrainingArgs(out_dir=out, max_steps=max_steps or 10**9, max_time=max_time, lr=lr, batch_size=batch_size,
                        save_every=save_every, eval_every=eval_every, **training)
    result = run_pretraining(PretrainArgs(
        inputs=[input] if isinstance(input, (str, Path)) else list(input), tokenizer=tokenizer, config=config,
        out_dir=out, training=args, seq_len=seq_len, pair_task=pair_task, wwm=wwm, heldout=heldout,
        cache_dir=cache_dir, resume=resume, utf8_errors=utf8_errors))
    return {**result, "out_dir": str(out)}
