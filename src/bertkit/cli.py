"""The `bertkit` command line: parse flags, call the library, print. User mistakes end in one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from bertkit.checkpoint import BUNDLED_NAMES, DEFAULT_MODEL, resolve_model_dir
from bertkit.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _split_model_and_texts(positional: list[str], model_flag: str | None, n_texts: int | None) -> tuple[str, list[str]]:
    """`bertkit embed [MODEL] TEXT...`: the first word is a model when it names a directory or a bundled model
    (and, for a fixed number of texts, when there is one word too many)."""
    if model_flag is not None:
        return model_flag, positional
    if positional and (n_texts is None or len(positional) == n_texts + 1):
        first = positional[0]
        is_model = first in BUNDLED_NAMES or (Path(first).is_dir() and (Path(first) / "config.json").exists())
        if is_model and (n_texts is not None or len(positional) > 1):
            return first, positional[1:]
        if n_texts is not None and len(positional) == n_texts + 1:
            raise UserError(f"{first}: not a checkpoint directory (expected MODEL followed by {n_texts} texts)")
    return DEFAULT_MODEL, positional


def _load_encoder(name: str):
    from bertkit.modeling import BertModel
    from bertkit.tokenization import BertTokenizer

    return BertModel.from_pretrained(name), BertTokenizer.from_pretrained(name)


def cmd_info(args) -> None:
    from bertkit.checkpoint import resolve_model_dir
    from bertkit.config import BertConfig
    from bertkit.modeling import BertModel

    directory = resolve_model_dir(args.model)
    config = BertConfig.from_pretrained(directory)
    encoder = BertModel(config)  # parameter counts need shapes only, not the weights
    embeddings = sum(p.numel() for p in encoder.embeddings.parameters())
    layers = sum(p.numel() for p in encoder.encoder.parameters())
    report = {
        "directory": str(directory),
        "architectures": config.architectures,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "labels": config.id2label,
        "parameters": {"embeddings": embeddings, "encoder": layers, "total_encoder_with_pooler": encoder.num_parameters()},
        "files": sorted(p.name for p in directory.iterdir() if p.is_file()),
    }
    print(json.dumps(report, indent=2))


def cmd_embed(args) -> None:
    from bertkit.inference import encode_sentences

    model_name, texts = _split_model_and_texts(args.texts, args.model, None)
    if not texts:
        raise UserError("embed: give at least one TEXT")
    model, tokenizer = _load_encoder(model_name)
    vectors = encode_sentences(model, tokenizer, texts, batch_size=args.batch_size)
    for text, v in zip(texts, vectors):
        print(json.dumps({"text": text, "embedding": [round(x, 6) for x in v.tolist()]}))


def cmd_similarity(args) -> None:
    from bertkit.inference import cosine_similarity, encode_sentences

    model_name, texts = _split_model_and_texts(args.texts, args.model, 2)
    if len(texts) != 2:
        raise UserError(f"similarity: expected [MODEL] TEXT_A TEXT_B, got {len(args.texts)} arguments")
    model, tokenizer = _load_encoder(model_name)
    a, b = encode_sentences(model, tokenizer, texts)
    print(json.dumps({"text_a": texts[0], "text_b": texts[1], "cosine": round(cosine_similarity(a, b), 6)}))


def cmd_tokenizer_train(args) -> None:
    from bertkit.data.text import list_files, read_paragraphs
    from bertkit.tokenization import BertTokenizer

    files = list_files(args.input)
    paragraphs = 0

    def texts():  # streamed: paragraphs (wrapped lines joined), validated as UTF-8 text file by file
        nonlocal paragraphs
        for f in files:
            for paragraph in read_paragraphs(f, errors=args.utf8_errors):
                paragraphs += 1
                yield paragraph

    tokenizer = BertTokenizer.train(
        texts=texts(), vocab_size=args.vocab_size, do_lower_case=not args.cased, min_frequency=args.min_frequency,
        # Every character may enter the vocabulary: Chinese needs thousands, a cap of 1000 turns the rest into [UNK].
        limit_alphabet=args.vocab_size,
    )
    if paragraphs == 0:
        raise UserError(f"--input {' '.join(args.input)}: no text to train on")
    tokenizer.save_pretrained(args.out)
    print(json.dumps({"out": str(args.out), "vocab_size": len(tokenizer), "files": len(files), "paragraphs": paragraphs}))


def cmd_pretrain(args) -> None:
    from bertkit.pretrain import PretrainArgs, run_pretraining

    if args.max_steps is None and args.max_time is None:
        raise UserError("pretrain: give --max-steps, --max-time or both")
    training = _training_args(args, max_steps=args.max_steps or 10**9)
    result = run_pretraining(
        PretrainArgs(
            inputs=args.input,
            tokenizer=args.tokenizer,
            config=args.config,
            out_dir=args.out,
            training=training,
            seq_len=args.seq_len,
            pair_task="sop" if args.sop else "none" if args.no_nsp else "nsp",
            wwm=args.wwm,
            heldout=args.heldout,
            cache_dir=args.cache_dir,
            resume=args.resume,
            utf8_errors=args.utf8_errors,
        )
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 prints
        keys = ("step", "stop_reason", "eval", "skipped_steps", "elapsed", "train_time", "tokens", "peak_rss_mib")
        print(json.dumps({k: result[k] for k in keys}))


def _training_args(args, **overrides):
    from bertkit.training import TrainingArgs

    fields = dict(
        out_dir=args.out, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, warmup=args.warmup,
        weight_decay=args.weight_decay, optimizer=args.optimizer, seed=args.seed, save_every=args.save_every,
        keep_last=args.keep_last, eval_every=args.eval_every, log_every=args.log_every, precision=args.precision,
        num_workers=args.workers, progress=not args.no_progress, max_time=args.max_time,
    )
    fields.update(overrides)
    return TrainingArgs(**fields)


def _data_args(args):
    from bertkit.finetune import DataArgs

    return DataArgs(train=getattr(args, "train", None), dev=getattr(args, "dev", None) or getattr(args, "data", None),
                    dataset=args.dataset, data_dir=args.data_dir, text_column=args.text_column,
                    pair_column=args.pair_column, label_column=args.label_column, skip_bad_rows=args.skip_bad_rows)


def cmd_finetune(args) -> None:
    from bertkit.finetune import FinetuneArgs, run_finetune

    if args.max_steps is None and args.epochs is None:
        args.epochs = 3.0
    training = _training_args(args, max_steps=args.max_steps or 1, epochs=None if args.max_steps else args.epochs)
    result = run_finetune(FinetuneArgs(
        task=args.task, model=args.model, out_dir=args.out, data=_data_args(args), training=training,
        seq_len=args.seq_len, doc_stride=args.doc_stride, max_train_examples=args.max_train_examples,
        max_eval_examples=args.max_eval_examples, resume=args.resume,
    ))
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 prints
        keys = ("step", "stop_reason", "eval", "best", "main_metric", "elapsed", "skipped_steps")
        print(json.dumps({k: result.get(k) for k in keys}))


def cmd_evaluate(args) -> None:
    from bertkit.finetune import run_evaluate

    metrics = run_evaluate(args.model, args.task, _data_args(args), args.batch_size, args.max_examples,
                           backend=args.backend, int8=args.int8)
    print(json.dumps(metrics))


def _read_inputs(args) -> list:
    rows: list = list(args.texts)
    if args.input:
        path = Path(args.input)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise UserError(f"--input {path}: no such file") from None
        except UnicodeDecodeError as e:
            raise UserError(f"--input {path}: not UTF-8 ({e.reason})") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: bad JSON ({e.msg})") from None
            else:
                rows.append(line)
    if not rows:
        raise UserError("predict: give TEXT arguments or --input FILE")
    return rows


def cmd_predict(args) -> None:
    from bertkit.inference.pipeline import Pipeline

    pipe = Pipeline(args.model, batch_size=args.batch_size, backend=args.backend, int8=args.int8)
    rows = _read_inputs(args)
    if pipe.task.name == "question-answering":
        bad = [i for i, r in enumerate(rows, 1) if not (isinstance(r, dict) and {"question", "context"} <= set(r))]
        if bad:
            raise UserError(f"input {bad[0]}: question answering needs JSON lines with \"question\" and \"context\"")
    for row, result in zip(rows, pipe(rows, all_scores=args.all_scores)):
        shown = row if isinstance(row, dict) else {"text": row}
        print(json.dumps({**shown, **result}, ensure_ascii=False))


def cmd_export_onnx(args) -> None:
    from bertkit.inference.onnx import export_onnx

    model_dir = resolve_model_dir(args.model)
    out = args.out or Path(model_dir) / ("model_int8.onnx" if args.int8 else "model.onnx")
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out}: is a directory; give a file name such as {out / 'model.onnx'}")
    try:
        export_onnx(model_dir, out, int8=args.int8, opset=args.opset)
    except OSError as e:
        raise UserError(f"--out {out}: cannot write ({e.strerror or e})") from None
    print(json.dumps({"onnx": str(out), "int8": args.int8, "bytes": out.stat().st_size}))


def cmd_demo(args) -> None:
    from bertkit.demo import run_demo

    run_demo(out_dir=args.out, minutes=args.minutes, data_dir=args.data_dir)


def cmd_data_download(args) -> None:
    from bertkit.tasks.datasets import download

    path = download(args.name, args.data_dir)
    print(json.dumps({"dataset": args.name, "path": str(path)}))


def _add_training_flags(s, lr: float, batch_size: int, save_every: int, eval_every: int) -> None:
    s.add_argument("--max-time", type=float, metavar="SECONDS", help="wall-clock budget (across resumes)")
    s.add_argument("--batch-size", type=_positive_int, default=batch_size, help="per process")
    s.add_argument("--grad-accum", type=_positive_int, default=1)
    s.add_argument("--seq-len", type=_positive_int, default=128)
    s.add_argument("--lr", type=float, default=lr)
    s.add_argument("--warmup", type=float, default=0.06, help="< 1: fraction of the steps; >= 1: steps")
    s.add_argument("--weight-decay", type=float, default=0.01)
    s.add_argument("--optimizer", choices=["adamw", "lamb"], default="adamw")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--save-every", type=int, default=save_every, metavar="STEPS")
    s.add_argument("--keep-last", type=int, default=2, metavar="K")
    s.add_argument("--eval-every", type=int, default=eval_every, metavar="STEPS", help="0: at the end")
    s.add_argument("--log-every", type=_positive_int, default=10, metavar="STEPS")
    s.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from the latest checkpoint under --out (or from CKPT)")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    s.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    s.add_argument("--no-progress", action="store_true")


def _add_data_flags(s, file_flags: tuple[str, ...]) -> None:
    for flag in file_flags:
        s.add_argument(flag, metavar="FILE")
    s.add_argument("--dataset", metavar="NAME", help="sst2 stsb mrpc conll2003 wnut17 squad cmrc2018 weibo_ner "
                                                    "resume_ner msra_ner afqmc (from $BERTKIT_DATA_DIR)")
    s.add_argument("--data-dir", help="datasets folder (default $BERTKIT_DATA_DIR or ../shared/data)")
    s.add_argument("--text-column", help="TSV/CSV column (name or 0-based index) of the text")
    s.add_argument("--pair-column", help="column of the second text, for pairs")
    s.add_argument("--label-column", help="column of the label")
    s.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows with a counted warning")


def _add_backend_flags(s) -> None:
    s.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="onnx: ONNX Runtime on the model's exported graph (exported once if missing)")
    s.add_argument("--int8", action="store_true", help="int8 Linear weights, dynamic quantization (CPU)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bertkit", description="BERT end to end: tokenize, pretrain, fine-tune, evaluate, predict.")
    p.add_argument("-v", "--verbose", action="store_true", help="log loading details")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("info", help="show a checkpoint's configuration and parameter counts")
    s.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"directory or name (default {DEFAULT_MODEL})")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("embed", help="mean-pooled, normalised sentence embeddings as JSON lines")
    s.add_argument("texts", nargs="*", metavar="[MODEL] TEXT")
    s.add_argument("-m", "--model", help=f"directory or name (default {DEFAULT_MODEL})")
    s.add_argument("--batch-size", type=int, default=32)
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("similarity", help="cosine similarity of two texts' embeddings")
    s.add_argument("texts", nargs="+", metavar="[MODEL] TEXT_A TEXT_B")
    s.add_argument("-m", "--model", help=f"directory or name (default {DEFAULT_MODEL})")
    s.set_defaults(func=cmd_similarity)

    s = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = s.add_subparsers(dest="tokenizer_command", required=True, parser_class=_Parser)
    t = tsub.add_parser("train", help="train a WordPiece vocabulary on text files or folders")
    t.add_argument("--input", nargs="+", required=True, metavar="PATH", help="text files or folders (UTF-8)")
    t.add_argument("--vocab-size", type=_positive_int, default=30522)
    t.add_argument("--out", type=Path, required=True, metavar="DIR")
    t.add_argument("--cased", action="store_true", help="keep case and accents (default: lower-case, strip accents)")
    t.add_argument("--min-frequency", type=_positive_int, default=2)
    t.add_argument("--utf8-errors", choices=["strict", "replace"], default="strict",
                   help="replace: drop bytes that are not UTF-8 (warned) instead of stopping")
    t.set_defaults(func=cmd_tokenizer_train)

    tasks = ["text-classification", "token-classification", "question-answering"]
    s = sub.add_parser("finetune", help="fine-tune a task head on labelled data")
    s.add_argument("--task", choices=tasks, help="implied by --dataset")
    s.add_argument("--model", default=DEFAULT_MODEL, help=f"pretrained directory or name (default {DEFAULT_MODEL})")
    s.add_argument("--out", type=Path, required=True, metavar="DIR")
    _add_data_flags(s, ("--train", "--dev"))
    s.add_argument("--epochs", type=float, help="passes over the training data (default 3 unless --max-steps)")
    s.add_argument("--max-steps", type=_positive_int)
    s.add_argument("--max-train-examples", type=_positive_int)
    s.add_argument("--max-eval-examples", type=_positive_int)
    s.add_argument("--doc-stride", type=_positive_int, default=128, help="question answering: window overlap")
    _add_training_flags(s, lr=5e-5, batch_size=32, save_every=0, eval_every=0)
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("evaluate", help="metrics of a fine-tuned model on labelled data (JSON on the last line)")
    s.add_argument("--model", required=True, metavar="DIR")
    s.add_argument("--task", choices=tasks)
    _add_data_flags(s, ("--data",))
    s.add_argument("--batch-size", type=_positive_int, default=64)
    s.add_argument("--max-examples", type=_positive_int)
    _add_backend_flags(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="predictions of a fine-tuned model as JSON lines")
    s.add_argument("texts", nargs="*", metavar="TEXT")
    s.add_argument("--model", required=True, metavar="DIR")
    s.add_argument("--input", metavar="FILE", help="one text a line, or JSON lines (text/text_pair, question/context)")
    s.add_argument("--all-scores", action="store_true", help="classification: the score of every label")
    s.add_argument("--batch-size", type=_positive_int, default=64)
    _add_backend_flags(s)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("export", help="export a model for other runtimes")
    esub = s.add_subparsers(dest="format", required=True, metavar="FORMAT")
    e = esub.add_parser("onnx", help="ONNX with dynamic batch and sequence axes, checked against PyTorch")
    e.add_argument("--model", required=True, metavar="DIR")
    e.add_argument("--out", type=Path, metavar="FILE", help="default DIR/model.onnx (DIR/model_int8.onnx with --int8)")
    e.add_argument("--int8", action="store_true", help="int8 Linear weights (ONNX Runtime dynamic quantization)")
    e.add_argument("--opset", type=_positive_int, default=18)
    e.set_defaults(func=cmd_export_onnx)

    s = sub.add_parser("demo", help="the main job: fine-tune all-MiniLM-L6-v2 on SST-2, evaluate, classify")
    s.add_argument("--out", type=Path, default=Path("runs/demo-sst2"), metavar="DIR")
    s.add_argument("--minutes", type=float, default=8.0, help="training budget")
    s.add_argument("--data-dir", help="datasets folder (default $BERTKIT_DATA_DIR or ../shared/data)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("data", help="datasets")
    dsub = s.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    d = dsub.add_parser("download", help="fetch a named dataset's public files into the data folder")
    d.add_argument("name")
    d.add_argument("--data-dir", help="datasets folder (default $BERTKIT_DATA_DIR or ../shared/data)")
    d.set_defaults(func=cmd_data_download)

    s = sub.add_parser("pretrain", help="pretrain BERT (MLM + NSP) on raw text")
    s.add_argument("--input", nargs="+", required=True, metavar="PATH", help="text files or folders (UTF-8)")
    s.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory or model name")
    s.add_argument("--config", required=True, metavar="PRESET|FILE", help="tiny|mini|small|medium|base|large or a config.json")
    s.add_argument("--out", type=Path, required=True, metavar="DIR")
    s.add_argument("--max-steps", type=_positive_int)
    _add_training_flags(s, lr=1e-4, batch_size=32, save_every=500, eval_every=500)
    s.add_argument("--wwm", action="store_true", help="whole-word masking")
    pair = s.add_mutually_exclusive_group()
    pair.add_argument("--no-nsp", action="store_true", help="MLM only")
    pair.add_argument("--sop", action="store_true", help="sentence-order prediction instead of NSP")
    s.add_argument("--heldout", type=float, default=0.05, help="share of documents held out for evaluation")
    s.add_argument("--utf8-errors", choices=["strict", "replace"], default="strict",
                   help="replace: drop bytes that are not UTF-8 (warned) instead of stopping")
    s.add_argument("--cache-dir", help="tokenized-data cache (default $BERTKIT_CACHE_DIR or ~/.cache/bertkit)")
    s.set_defaults(func=cmd_pretrain)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="bertkit: %(message)s")
    # Warnings about the user's data are one line each, without the library's source line.
    warnings.showwarning = lambda message, category, *rest, **kw: print(f"bertkit: warning: {message}", file=sys.stderr)
    try:
        args.func(args)
    except UserError as e:
        print(f"bertkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
