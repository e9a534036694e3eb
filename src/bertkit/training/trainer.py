"""The one training loop, for pretraining and fine-tuning alike.

Exact resume by construction: the data order is a pure function of (seed, epoch), each micro-batch is a pure function
of its global index, and a checkpoint holds model, optimizer, scheduler and the RNG states of every process (each
process draws its own dropout stream, seeded by its rank). Checkpoints are written at each evaluation, every
`save_every` steps and every `save_minutes` of wall time, so a kill loses minutes at most; `--resume` then ends
byte-identical to a run never killed. Losses are summed per process and divided by the counts of the whole global
batch, so N processes with batch b train as one process with batch N*b.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from bertkit.errors import UserError
from bertkit.settings import autocast_dtype
from bertkit.training import checkpointing
from bertkit.training.distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier
from bertkit.training.logbook import Logbook, plot_metrics
from bertkit.training.optim import make_optimizer, make_scheduler, resolve_warmup

logger = logging.getLogger("bertkit")


@dataclass
class TrainingArgs:
    out_dir: Path
    max_steps: int = 1000  # optimizer steps; the LR schedule decays to zero here
    max_time: float | None = None  # wall-clock budget in seconds (across resumes); stops early, saving first
    epochs: float | None = None  # alternative to max_steps: passes over the training data
    batch_size: int = 32  # examples per process per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 1e-4
    warmup: float = 0.06  # < 1: fraction of max_steps; >= 1: steps
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 0  # steps between checkpoints (0: none by step count; see save_minutes and evaluations)
    save_minutes: float = 5.0  # a checkpoint at least this often in wall time (0: off); also one at each evaluation
    keep_last: int = 2  # checkpoints kept on disk
    eval_every: int = 0  # steps between evaluations (0: only at the end)
    log_every: int = 10
    precision: str = "auto"  # auto: fp32 on CPU, bf16 (else fp16) autocast on CUDA; or fp32 | bf16 | fp16
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops
    num_workers: int = 0  # DataLoader workers building batches (masking, padding)
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # caller's settings, saved with the state


class Objective(Protocol):
    """What a task adds to the loop. Terms are summed losses; `counts` are their global denominators."""

    def counts(self, batch: dict) -> dict[str, float]: ...

    def __call__(self, model, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, float]]: ...

    def report(self, sums: dict[str, float], counts: dict[str, float]) -> dict[str, float]: ...


def epoch_order(n: int, seed: int, epoch: int, global_batch: int, lengths: list[int] | None = None) -> torch.Tensor:
    """The order of the examples in an epoch: a seeded permutation. With `lengths`, examples of similar length are
    grouped (sorted within windows of 64 global batches), and the batches are then shuffled, so batches carry little
    padding while their order stays random. The n % global_batch examples that do not fill a batch sit out the epoch
    (the caller drops the tail); they are chosen at random before grouping, so it is never the longest ones."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    if lengths is None:
        return perm
    full = n // global_batch * global_batch
    kept, left_out = perm[:full], perm[full:]
    window = 64 * global_batch
    chunks = []
    for start in range(0, full, window):
        chunk = kept[start : start + window]
        chunks.append(chunk[torch.argsort(torch.as_tensor([lengths[i] for i in chunk.tolist()]), stable=True)])
    batches = torch.cat(chunks).view(-1, global_batch)
    return torch.cat([batches[torch.randperm(len(batches), generator=g)].reshape(-1), left_out])


class _MicroBatches(Dataset):
    """Micro-batch m of the run: epoch m // per_epoch, a slice of that epoch's seeded order for this rank."""

    def __init__(self, data: Dataset, collate: Callable, batch_size: int, dist: DistInfo, seed: int,
                 lengths: list[int] | None = None):
        self.data, self.collate, self.batch_size, self.dist, self.seed = data, collate, batch_size, dist, seed
        self.lengths = lengths
        if len(data) < dist.world_size:
            raise UserError(f"the training data has {len(data)} examples, fewer than the {dist.world_size} processes")
        if len(data) < batch_size * dist.world_size:
            self.batch_size = batch_size = len(data) // dist.world_size
            logger.warning("only %d training examples: batch size lowered to %d", len(data), batch_size)
        self.global_batch = batch_size * dist.world_size
        self.per_epoch = len(data) // self.global_batch
        self._perm_epoch, self._perm = -1, None

    def epoch_of(self, m: int) -> int:
        return m // self.per_epoch

    def __len__(self) -> int:
        return 2**62  # indexed by a sampler that knows where to start and stop

    def __getitem__(self, m: int) -> dict:
        epoch, k = divmod(m, self.per_epoch)
        if epoch != self._perm_epoch:
            self._perm = epoch_order(len(self.data), self.seed, epoch, self.global_batch, self.lengths)
            self._perm_epoch = epoch
        start = k * self.global_batch + self.dist.rank * self.batch_size
        idx = self._perm[start : start + self.batch_size].tolist()
        return self.collate([self.data[i] for i in idx], idx, epoch)


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        train_data: Dataset,
        collate: Callable[[list, list[int], int], dict],
        objective: Objective,
        args: TrainingArgs,
        dist: DistInfo = DistInfo(),
        device: torch.device = torch.device("cpu"),
        evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        save_extra: Callable[[Path], None] | None = None,
        best_metric: str | None = None,
        lengths: list[int] | None = None,
    ):
        """`collate(items, indices, epoch)` builds a batch; `evaluate(model)` returns metrics (rank 0 only);
        `save_extra(dir)` writes companions of the weights (the tokenizer); with `best_metric`, out_dir holds the
        model with the best value of that evaluation metric (higher is better), else the last one; `lengths` (one per
        training example) groups examples of similar length into batches."""
        self.args, self.dist, self.device = args, dist, device
        self.objective, self.evaluate, self.save_extra, self.best_metric = objective, evaluate, save_extra, best_metric
        self.model = model.to(device)
        self.batches = _MicroBatches(train_data, collate, args.batch_size, dist, args.seed, lengths)
        if args.epochs is not None:
            args.max_steps = max(1, math.ceil(args.epochs * self.batches.per_epoch / args.grad_accum))
        self.optimizer = make_optimizer(self.model, args.optimizer, args.lr, args.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, resolve_warmup(args.warmup, args.max_steps), args.max_steps)
        self.amp_dtype = autocast_dtype(args.precision, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        self.ddp = None
        if dist.enabled:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        # Dropout (and anything else drawing from the global RNGs) gets a stream of its own on each process; the
        # weights are rank 0's on every process already (DDP broadcasts them above).
        seed_everything(args.seed + 1_000_003 * dist.rank)
        # elapsed: wall time of the run (the --max-time budget); train_time: forward/backward/update only.
        # skipped_steps: non-finite losses; overflow_steps: fp16 steps the GradScaler skipped (normal, not counted).
        self.state = {"step": 0, "elapsed": 0.0, "train_time": 0.0, "skipped_steps": 0, "overflow_steps": 0,
                      "examples": 0, "tokens": 0, "best": None, "world_size": dist.world_size}

    # ---- checkpoints ------------------------------------------------------------------------------------------

    def resume_from(self, path: Path) -> None:
        state = checkpointing.load_checkpoint(path, self.model, self.optimizer, self.scheduler, self.scaler,
                                              rank=self.dist.rank)
        saved_world = state.get("world_size", 1)
        if saved_world != self.dist.world_size:
            raise UserError(f"{path}: saved by a run of {saved_world} processes, resumed with "
                            f"{self.dist.world_size}; resume with the same number of processes")
        self.state.update(state)
        if self.dist.is_main:
            logger.warning("resumed from %s at step %d", path, self.state["step"])  # shown without --verbose

    def start_or_resume(self, resume: str | None) -> None:
        """Resume from `resume` ("auto": the newest intact checkpoint under out_dir; or a path), or by itself when
        torchrun restarted this worker after a failure. Says so when there is nothing to resume from, and when a
        fresh start will replace an earlier run's checkpoints."""
        resume = checkpointing.resume_request(resume)
        root = self.args.out_dir / "checkpoints"
        if resume:
            path = checkpointing.find_resume_checkpoint(resume, self.args.out_dir)
            if path is not None:
                self.resume_from(path)
            elif self.dist.is_main:
                logger.warning("--resume %s: no checkpoint under %s yet, starting from step 0", resume, root)
        elif self.dist.is_main and checkpointing.list_checkpoints(root):
            logger.warning("%s holds checkpoints of an earlier run: starting from step 0 (--resume continues it)",
                           root)

    def save(self) -> Path | None:
        """A checkpoint of this step (every process takes part: each one's RNG states go into it). A failed save
        stops every process with the same one-line error; the previous checkpoints stay as they were."""
        rngs = dict(enumerate(all_gather_objects(checkpointing.rng_state())))
        path, error = None, None
        if self.dist.is_main:
            state = {**self.state, "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.args).items()}}
            try:
                path = checkpointing.save_checkpoint(
                    self.args.out_dir / "checkpoints", self.state["step"], self.model, self.optimizer, self.scheduler,
                    self.scaler, state, self.args.keep_last, rngs,
                )
            except UserError as e:
                error = str(e)
        if all_reduce_sum([float(error is not None)], self.device)[0]:
            raise UserError(error or "rank 0 could not save the checkpoint (its message says why); stopping")
        self._last_save = self.state["elapsed"]
        return path

    # ---- one optimizer step -----------------------------------------------------------------------------------

    def _step(self, micro: list[dict]) -> tuple[dict[str, float], bool]:
        """Forward/backward over the micro-batches and one update. Returns metrics and whether it was applied."""
        net = self.ddp or self.model
        counts: dict[str, float] = {}
        for b in micro:
            for k, v in self.objective.counts(b).items():
                counts[k] = counts.get(k, 0.0) + v
        keys = sorted(counts)
        counts = dict(zip(keys, all_reduce_sum([counts[k] for k in keys], self.device)))
        world = self.dist.world_size
        sums: dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for j, b in enumerate(micro):
            b = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in b.items()}
            sync = self.ddp is None or j == len(micro) - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    terms, stats = self.objective(net, b)
                # DDP averages gradients over processes; * world undoes that so the sum is over the global batch.
                loss = sum(t / max(counts[k], 1.0) for k, t in terms.items()) * world
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            for k, t in terms.items():
                sums[k] = sums.get(k, 0.0) + t.item()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
        keys = sorted(sums)
        sums = dict(zip(keys, all_reduce_sum([sums[k] for k in keys], self.device)))
        metrics = self.objective.report(sums, counts)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        metrics["grad_norm"] = grad_norm.item()
        loss_ok, grads_ok = math.isfinite(metrics["loss"]), math.isfinite(metrics["grad_norm"])
        if self.scaler:
            # fp16: gradients that overflowed at the current loss scale are the scaler's business: it skips the
            # update and lowers the scale. Only a non-finite loss itself is a bad step.
            self.scaler.step(self.optimizer)
            self.scaler.update()
            status = "ok" if loss_ok and grads_ok else "overflow" if loss_ok else "bad"
        else:
            status = "ok" if loss_ok and grads_ok else "bad"
            if status == "ok":
                self.optimizer.step()
        if status != "bad":
            self.scheduler.step()  # the schedule follows the step count, overflow steps included
        self.optimizer.zero_grad(set_to_none=True)
        return metrics, status

    def _run_eval(self, logbook: Logbook | None) -> dict[str, float] | None:
        if self.evaluate is None:
            return None
        metrics = None
        if self.dist.is_main:
            rng = torch.get_rng_state()  # evaluation must not shift the training RNG (exact resume)
            self.model.eval()
            with torch.no_grad():
                metrics = self.evaluate(self.model)
            self.model.train()
            torch.set_rng_state(rng)
            logbook.log(self.state["step"], "eval", metrics)
            logger.info("step %d eval: %s", self.state["step"], _fmt(metrics))
            value = metrics.get(self.best_metric) if self.best_metric else None
            if value is not None and not math.isfinite(value):
                logger.warning("step %d: %s is %s: this model cannot be the best", self.state["step"],
                               self.best_metric, value)
            elif value is not None:
                best = self.state.get("best")
                if best is None or value > best["value"]:
                    self.state["best"] = {"step": self.state["step"], "value": value}
                    self._export(self.args.out_dir)
        barrier()
        return metrics

    def _export(self, directory: Path) -> None:
        try:
            self.model.save_pretrained(directory)
            if self.save_extra:
                self.save_extra(directory)
        except Exception as e:  # noqa: BLE001 - a failed write, whatever library reports it
            raise UserError(f"cannot write the model into {directory}: {checkpointing.write_error(e)}; the training "
                            f"checkpoints are in {self.args.out_dir / 'checkpoints'}") from None

    # ---- the loop ---------------------------------------------------------------------------------------------

    def train(self) -> dict:
        args, dist = self.args, self.dist
        logbook = Logbook(args.out_dir, self.state["step"], redo_eval=self.state["step"] >= args.max_steps) \
            if dist.is_main else None
        start_step = self.state["step"]
        first_micro = start_step * args.grad_accum
        loader = DataLoader(
            self.batches,
            batch_size=None,
            sampler=range(first_micro, args.max_steps * args.grad_accum),
            num_workers=args.num_workers,
            # Its own generator: creating the iterator must not draw from the global RNG (exact resume).
            generator=torch.Generator().manual_seed(args.seed),
        )
        from tqdm.auto import tqdm

        bar = tqdm(total=args.max_steps, initial=start_step, disable=not (args.progress and dist.is_main),
                   dynamic_ncols=True, unit="step",
                   mininterval=0.1 if sys.stderr.isatty() else 30)  # a log file gets a line every 30 s, not each step
        self.model.train()
        t0, elapsed0, bad_in_row = time.perf_counter(), self.state["elapsed"], 0
        self._last_save = elapsed0
        window: dict[str, list] = {}
        it = iter(loader)
        stop_reason = "max_steps"
        while self.state["step"] < args.max_steps:
            t_step = time.perf_counter()
            micro = [next(it) for _ in range(args.grad_accum)]
            metrics, status = self._step(micro)
            self.state["train_time"] += time.perf_counter() - t_step
            step = self.state["step"] = self.state["step"] + 1
            self.state["examples"] += self.batches.global_batch * args.grad_accum
            self.state["tokens"] += int(all_reduce_sum([sum(int(b["attention_mask"].sum()) for b in micro)],
                                                       self.device)[0])
            self.state["elapsed"] = elapsed0 + time.perf_counter() - t0
            if status == "ok":
                bad_in_row = 0
                for k, v in metrics.items():
                    window.setdefault(k, []).append(v)
            elif status == "overflow":
                self.state["overflow_steps"] += 1
                logger.info("step %d: fp16 gradients overflowed; the GradScaler skipped the update", step)
            else:
                bad_in_row += 1
                self.state["skipped_steps"] += 1
                logger.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", step, bad_in_row)
                if bad_in_row >= args.max_bad_steps:
                    bar.close()
                    raise UserError(
                        f"{bad_in_row} steps in a row had a non-finite loss (last at step {step}); lower --lr or "
                        "check the data. The last good checkpoint is in " + str(args.out_dir / "checkpoints")
                    )
            bar.update(1)
            if dist.is_main and (step % args.log_every == 0 or step == args.max_steps) and window:
                logged = {k: sum(v) / len(v) for k, v in window.items()}
                logged.update(lr=self.scheduler.get_last_lr()[0], epoch=self.batches.epoch_of(step * args.grad_accum - 1),
                              tokens_per_s=self.state["tokens"] / max(self.state["train_time"], 1e-9),
                              skipped_steps=self.state["skipped_steps"], time=round(self.state["elapsed"], 2))
                logbook.log(step, "train", logged)
                bar.set_postfix({k: f"{logged[k]:.3g}" for k in list(window)[:3]})
                window = {}
            over_time = args.max_time is not None and self.state["elapsed"] >= args.max_time
            save_due = bool(args.save_minutes) and self.state["elapsed"] - self._last_save >= 60 * args.save_minutes
            # every rank decides as one: stop together, save together
            over_time, save_due = (bool(x) for x in all_reduce_sum([float(over_time), float(save_due)], self.device))
            evaluated = False
            if args.eval_every and step % args.eval_every == 0 and step != args.max_steps and not over_time:
                self._run_eval(logbook)
                evaluated = True
            if step != args.max_steps and not over_time and (
                    evaluated or save_due or (args.save_every and step % args.save_every == 0)):
                self.save()
            if over_time:
                stop_reason = "max_time"
                break
        bar.close()
        final_eval = self._run_eval(logbook)
        self.save()
        if dist.is_main:
            if self.best_metric is None or self.state.get("best") is None:
                self._export(args.out_dir)
            logbook.close()
            plot_metrics(logbook.path, args.out_dir / "training_curves.png")
        barrier()
        peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        return {"stop_reason": stop_reason, "eval": final_eval, "peak_rss_mib": round(peak_rss_mib, 1), **self.state}


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python's and NumPy's global RNGs."""
    import random

    import numpy as np

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
