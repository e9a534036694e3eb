"""One training loop for pretraining and fine-tuning: optimisers, schedules, checkpoints, logging, DDP."""

from bertkit.training.trainer import Objective, Trainer, TrainingArgs

__all__ = ["Trainer", "TrainingArgs", "Objective"]
