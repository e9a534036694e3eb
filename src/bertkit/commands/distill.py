"""`bertkit distill` as a Python function: a fine-tuned teacher -> a smaller student of the same task, trained on the
teacher's soft targets (and optionally its hidden states and attention relations) with the fine-tuning loop.

The student is an ordinary checkpoint of the teacher's task (it loads in transformers, serves and exports as any
other); it shares the teacher's tokenizer, so both read the same token ids and the teacher's outputs are computed
once per training example and cached (`training.distillation.TeacherCache`).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import re
import statistics
import time
from pathlib import Path

import torch

from bertkit import settings
from bertkit.config import PRESETS, BertConfig
from bertkit.errors import UserError
from bertkit.modeling.heads import IGNORE_INDEX
from bertkit.tasks import DataArgs
from bertkit.training import Trainer, TrainingArgs
from bertkit.training.distillation import (DistillationObjective, Student, TeacherCache, collate_with_teacher,
                                           layer_map, spread_layers)
from bertkit.training.distributed import barrier, setup, teardown

logger = logging.getLogger("bertkit")
LAYER_KEY = re.compile(r"^(\w+\.encoder\.layer\.)(\d+)(\..*)$")


# ---- the student ------------------------------------------------------------------------------------------------


def student_from_layers(teacher, k: int):
    """A K-layer copy of `teacher` (same class and width): its embeddings, pooler and head, and the teacher's
    layers `spread_layers(N, K)` as its layers 0..K-1, weight for weight."""
    picked = spread_layers(teacher.config.num_hidden_layers, k)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = k
    student = type(teacher)(config)
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        m = LAYER_KEY.match(key)
        state[key] = source[f"{m[1]}{picked[int(m[2])]}{m[3]}" if m else key]
    student.load_state_dict(state)
    return student, f"layers {picked} of the teacher's {teacher.config.num_hidden_layers}"


def same_vocabulary(student_dir: Path, teacher_dir: Path) -> bool:
    a, b = Path(student_dir) / "vocab.txt", Path(teacher_dir) / "vocab.txt"
    return not (a.exists() and b.exists()) or a.read_bytes() == b.read_bytes()


def build_student(spec: str, teacher, teacher_dir: Path, the_task, seed: int = 0):
    """(model, how it was made) for `--student SPEC`: `layers=K`, a size preset (`mini`, ...: random weights with
    the teacher's vocabulary), or a checkpoint directory with the teacher's vocabulary (e.g. `bertkit pretrain`'s)."""
    from bertkit.checkpoint import resolve_model_dir

    torch.manual_seed(seed)  # a new head's (or a preset's) initialisation
    m = re.fullmatch(r"layers=(\d+)", spec)
    if m:
        return student_from_layers(teacher, int(m[1]))
    t = teacher.config
    if spec in PRESETS:
        config = BertConfig.from_preset(spec, vocab_size=t.vocab_size, max_position_embeddings=t.max_position_embeddings,
                                        type_vocab_size=t.type_vocab_size, pad_token_id=t.pad_token_id,
                                        **the_task.config_fields())
        return the_task.model_class(config), f"preset {spec}, random initialisation"
    if not Path(spec).is_dir():
        raise UserError(f"--student {spec}: expected layers=K, a preset ({', '.join(PRESETS)}) or a checkpoint "
                        "directory")
    directory = resolve_model_dir(spec)
    config = BertConfig.from_pretrained(directory)
    if config.vocab_size != t.vocab_size or not same_vocabulary(directory, teacher_dir):
        raise UserError(f"--student {spec}: its vocabulary ({config.vocab_size} tokens) is not the teacher's "
                        f"({t.vocab_size}); the student reads the teacher's token ids, so pretrain it with "
                        f"--tokenizer {teacher_dir}")
    model = the_task.model_class.from_pretrained(directory, ignore_mismatched_sizes=True, **the_task.config_fields())
    return model, f"checkpoint {directory}"


# ---- augmentation -------------------------------------------------------------------------------------------------


def read_unlabelled(path: str, the_task) -> list:
    """One input a line: a text, or for pairs two texts separated by a TAB (token classification: the line's
    words, split as the task splits raw text). Empty lines are skipped."""
    from bertkit.tasks.examples import TextExample, TokenExample

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--unlabelled {path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    examples = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        if the_task.name == "token-classification":
            from bertkit.tasks.token_classification import split_words

            spans = split_words(line, the_task.tokenizer, the_task.word_splitter)
            examples.append(TokenExample([line[a:b] for a, b in spans], None, where))
        else:
            text, _, pair = line.partition("\t")
            examples.append(TextExample(text, pair or None, None, where))
    if not examples:
        raise UserError(f"--unlabelled {path}: no text in the file")
    return examples


def augmented(examples: list, mlm_dir: str, copies: int, p: float, top_k: int, seed: int) -> list:
    """TinyBERT word replacement (`data.augment`) of each example's words: `copies` new examples each, unlabelled."""
    from dataclasses import replace

    from bertkit.data.augment import augment_words, word_candidates
    from bertkit.modeling import BertForMaskedLM
    from bertkit.tokenization import BertTokenizer

    mlm = BertForMaskedLM.from_pretrained(mlm_dir)
    if any(k.startswith("cls.predictions") for k in mlm.loading_info["missing_keys"]):
        raise UserError(f"--augment-mlm {mlm_dir}: this checkpoint has no MLM head (cls.predictions); use a "
                        "pretrained BERT with one, e.g. a `bertkit pretrain` output")
    tokenizer = BertTokenizer.from_pretrained(mlm_dir)
    rng = random.Random(seed)
    token_level = hasattr(examples[0], "tokens")
    fields = [[e.tokens] if token_level else [e.text.split()] + ([e.text_pair.split()] if e.text_pair else [])
              for e in examples]
    sentences = [words for f in fields for words in f]
    candidates = iter(word_candidates(mlm, tokenizer, sentences, top_k))
    out = []
    for e, f in zip(examples, fields):
        variants = [augment_words(words, next(candidates), copies, p, rng) for words in f]
        for j in range(min(len(v) for v in variants)):
            if token_level:
                out.append(replace(e, tokens=variants[0][j], tags=None, source=f"{e.source} (augmented)"))
            else:
                out.append(replace(e, text=" ".join(variants[0][j]),
                                   text_pair=" ".join(variants[1][j]) if len(variants) > 1 else None,
                                   label=None, source=f"{e.source} (augmented)"))
    return out


def unlabelled_features(the_task, examples: list) -> list:
    """Training features for inputs without labels: a placeholder label that `label_from_teacher` replaces."""
    from dataclasses import replace

    if the_task.name == "token-classification":
        fill = the_task.labels[0]
        return the_task.features([replace(e, tags=[fill] * len(e.tokens)) for e in examples])
    space = the_task.space
    fill = 0.0 if space.labels is None else ([] if space.problem_type.startswith("multi") else space.labels[0])
    return the_task.features([replace(e, label=fill) for e in examples])


def label_from_teacher(feature: dict, logits: torch.Tensor, problem_type: str | None) -> None:
    """The teacher's prediction as the hard label of an unlabelled feature: its class, its classes (multi-label),
    its score (regression), or per word its tag at the word's first piece (token classification)."""
    if isinstance(feature["labels"], list) and logits.dim() == 2:  # token classification: (L, C)
        best = logits.argmax(-1).tolist()
        feature["labels"] = [best[t] if label != IGNORE_INDEX else IGNORE_INDEX
                             for t, label in enumerate(feature["labels"])]
    elif problem_type == "regression":
        feature["labels"] = float(logits[0])
    elif problem_type == "multi_label_classification":
        feature["labels"] = (logits > 0).float().tolist()
    else:
        feature["labels"] = int(logits.argmax())


# ---- the report -----------------------------------------------------------------------------------------------


def throughput(models: dict, the_task, examples, features, batch_size: int, repeats: int) -> dict[str, float]:
    """Dev examples per second of each model over the same inputs, batching and threads: the task's evaluation
    pass timed `repeats` times, the models taking turns; the median."""
    timings: dict[str, list[float]] = {name: [] for name in models}
    for name, model in models.items():  # warm-up: one batch each (its features made afresh: windows are not examples)
        the_task.evaluate(model, examples[:batch_size], None, batch_size)
    for _ in range(repeats):
        for name, model in models.items():
            t0 = time.perf_counter()
            the_task.evaluate(model, examples, features, batch_size)
            timings[name].append(time.perf_counter() - t0)
    return {name: len(examples) / statistics.median(t) for name, t in timings.items()}


# ---- the command ----------------------------------------------------------------------------------------------


def distill(out: str | Path, teacher: str, student: str = "layers=3", *, dataset: str | None = None,
            train: str | None = None, dev: str | None = None, data_dir: str | None = None,
            text_column: str | None = None, pair_column: str | None = None, label_column: str | None = None,
            skip_bad_rows: bool = False, epochs: float | None = None, max_steps: int | None = None,
            max_train_examples: int | None = None, max_eval_examples: int | None = None,
            seq_len: int | None = None, alpha: float = 0.5, temperature: float = 2.0, hidden_weight: float = 0.0,
            attention_weight: float = 0.0, relation_heads: int | None = None, unlabelled: str | None = None,
            augment: int = 0, augment_mlm: str | None = None, augment_p: float = 0.4, augment_top_k: int = 15,
            speed_repeats: int = 3, cache_dir: str | None = None, resume: str | None = None, lr: float = 1e-4, batch_size: int = 32,
            **training) -> dict:
    """Distil the fine-tuned `teacher` into `student` (`layers=K`, a preset, or a checkpoint directory) on the
    teacher's task, with `dataset`'s train split or the `train` file (dev: reported), and write the student to
    `out`. The loss is alpha * soft targets at `temperature` + (1 - alpha) * the labels' loss, plus
    `hidden_weight` * hidden-state MSE and `attention_weight` * MiniLM attention-relation KL when they are set.
    `unlabelled` (a file of inputs) and `augment` copies per example (TinyBERT word replacement by the MLM
    `augment_mlm`) add training inputs that the teacher labels. Returns the loop's summary with `teacher`,
    `student` (dev metrics, parameters, examples/s) and `speedup`; also written to `out/distillation.json`. The
    teacher's outputs are cached under `cache_dir` (default $BERTKIT_CACHE_DIR or ~/.cache/bertkit).
    Other keywords are the training loop's settings, as `finetune`'s."""
    import json

    from bertkit.checkpoint import atomic_write_text
    from bertkit.commands.finetune import load_split, subsample
    from bertkit.inference.pipeline import load_task

    data = DataArgs(train, dev, dataset, data_dir, text_column, pair_column, label_column, skip_bad_rows)
    if max_steps is None and epochs is None:
        epochs = 3.0
    DistillationObjective.check(alpha, temperature)
    if augment and not augment_mlm:
        raise UserError("--augment needs --augment-mlm DIR (a BERT checkpoint with its MLM head)")
    out = Path(out)
    args = TrainingArgs(out_dir=out, max_steps=max_steps or 1, epochs=None if max_steps else epochs, lr=lr,
                        batch_size=batch_size, **training)
    dist, device = setup()
    try:
        teacher_dir, config, the_task = load_task(teacher, max_length=seq_len)
        if not the_task.trainable:
            raise UserError(f"--teacher {teacher}: a {the_task.name} checkpoint; distillation needs a fine-tuned "
                            "task model (text-classification, token-classification, question-answering)")
        if (unlabelled or augment) and the_task.name == "question-answering":
            raise UserError("--unlabelled and --augment take texts to classify or tag; question answering needs "
                            "answers, so distil it on its labelled data")
        _, train_examples, _ = load_split(the_task.name, data, "train")
        if train_examples is None:
            raise UserError("give --train FILE (and --dev FILE) or --dataset NAME")
        _, dev_examples, _ = load_split(the_task.name, data, "dev")
        train_examples = subsample(train_examples, max_train_examples, args.seed)
        dev_examples = subsample(dev_examples, max_eval_examples, args.seed) if dev_examples else None
        features = the_task.features(train_examples, skip_bad_rows=skip_bad_rows)
        labelled = len(features)
        extra = read_unlabelled(unlabelled, the_task) if unlabelled else []
        if augment:
            extra += augmented(list(train_examples), augment_mlm, augment, augment_p, augment_top_k, args.seed)
        if extra:
            features = list(features) + unlabelled_features(the_task, extra)
        dev_features = the_task.features(dev_examples, skip_bad_rows=skip_bad_rows) if dev_examples else None

        teacher_net = the_task.model_class.from_pretrained(teacher_dir, config=config).to(device).eval()
        teacher_net.requires_grad_(False)  # the teacher never trains
        net, made = build_student(student, teacher_net, teacher_dir, the_task, args.seed)
        net.config.extra.update({**the_task.config_extra(), "distilled_from": str(teacher_dir)})
        N, K = teacher_net.config.num_hidden_layers, net.config.num_hidden_layers
        pairs = layer_map(N, K) if hidden_weight else []
        attention = (N - 1, K - 1) if attention_weight else (None, None)
        heads = relation_heads or math.gcd(teacher_net.config.num_attention_heads, net.config.num_attention_heads)

        cache_root = settings.cache_dir(cache_dir) / "teacher-outputs"  # content-keyed: runs on the same data share it
        key = TeacherCache.key(teacher_dir, features, [t for _, t in pairs], attention[0])
        if dist.is_main:
            logger.info("%s: %d labelled and %d teacher-labelled training features; student: %s", the_task.name,
                        labelled, len(features) - labelled, made)
            t0 = time.perf_counter()
            TeacherCache.build(cache_root, key, teacher_net, features, the_task.collate, [t for _, t in pairs],
                               attention[0], batch_size=2 * args.batch_size, progress=args.progress)
            logger.info("teacher outputs: %.1f s", time.perf_counter() - t0)
        barrier()
        cache = TeacherCache(cache_root / key)  # every rank opens what rank 0 built (or found)
        problem = getattr(getattr(the_task, "space", None), "problem_type", None)
        for i in range(labelled, len(features)):
            label_from_teacher(features[i], cache.row("logits", i), problem)

        trained = Student(net, pairs, teacher_net.config.hidden_size, attention[1])
        objective = DistillationObjective(the_task.objective, alpha, temperature, hidden_weight, attention_weight,
                                          heads)
        evaluate = (lambda m: the_task.evaluate(m, dev_examples, dev_features, batch_size=2 * args.batch_size)) \
            if dev_examples else None
        trainer = Trainer(trained, features, collate_with_teacher(the_task.collate, cache), objective, args, dist,
                          device, evaluate=evaluate, save_extra=the_task.tokenizer.save_pretrained,
                          lengths=[len(f["input_ids"]) for f in features])
        trainer.start_or_resume(resume)
        result = trainer.train()
        report = {"teacher": {"model": str(teacher_dir), "parameters": teacher_net.num_parameters()},
                  "student": {"spec": student, "made_from": made, "parameters": net.num_parameters()},
                  "main_metric": the_task.main_metric, "task": the_task.name,
                  "training_features": {"labelled": labelled, "teacher_labelled": len(features) - labelled}}
        if dist.is_main and dev_examples:
            net.eval()
            with torch.no_grad():
                report["teacher"]["eval"] = the_task.evaluate(teacher_net, dev_examples, dev_features, 2 * args.batch_size)
            report["student"]["eval"] = result["eval"]
            metric = the_task.main_metric
            report["kept"] = report["student"]["eval"][metric] / report["teacher"]["eval"][metric]
            if speed_repeats:
                speed = throughput({"teacher": teacher_net, "student": net}, the_task, dev_examples, dev_features,
                                   2 * args.batch_size, speed_repeats)
                report["teacher"]["examples_per_s"], report["student"]["examples_per_s"] = speed["teacher"], speed["student"]
                report["speedup"] = speed["student"] / speed["teacher"]
                report["threads"] = torch.get_num_threads()
            atomic_write_text(out / "distillation.json", json.dumps(report, indent=2))
        barrier()
        return {**result, **report, "out_dir": str(out)}
    finally:
        teardown()
