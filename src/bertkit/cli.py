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


FINETUNE_EXAMPLES = """examples:
  bertkit finetune --dataset sst2 --out runs/sst2 --epochs 1 --lr 1e-4 --seq-len 64
  bertkit finetune --dataset squad --out runs/squad --epochs 2 --lr 1e-4
  bertkit finetune --dataset mrpc --out runs/mrpc --epochs 3 --eval-every 100 --validation-fraction 0.1
  bertkit finetune --dataset sst2 --out runs/sst2 --epochs 1 --resume      # after a crash: continue exactly
  bertkit finetune --task text-classification --train examples/reviews.tsv --dev examples/reviews.tsv \\
      --text-column review --label-column stars --out runs/reviews --epochs 5
"""
EVALUATE_EXAMPLES = """examples:
  bertkit evaluate --model runs/sst2 --dataset sst2
  bertkit evaluate --model runs/mrpc --dataset mrpc --split test
  bertkit evaluate --model all-MiniLM-L6-v2 --task sentence-similarity --dataset stsb
"""
PREDICT_EXAMPLES = """examples:
  bertkit predict --model runs/sst2 "I love this movie!" --top-k all
  bertkit predict --model runs/conll "Peter Blackburn lives in Brussels." --aggregation-strategy simple
  bertkit predict --model runs/squad --input examples/questions.jsonl
  bertkit predict --model runs/sst2 --input examples/reviews.txt --output predictions.jsonl
"""
SERVE_EXAMPLES = """examples:
  bertkit serve                                          # all-MiniLM-L6-v2: embeddings and similarity
  bertkit serve sst2=runs/sst2 conll=runs/conll --port 8080
  bertkit serve runs/sst2 --max-batch-tokens 8192 --max-wait-ms 5 --api-key "$KEY"
  curl -s localhost:8000/models/all-MiniLM-L6-v2 -d '{"inputs": "I love this movie!"}'
  curl -s localhost:8000/v1/embeddings -d '{"model": "all-MiniLM-L6-v2", "input": ["a", "b"]}'
the page is at http://127.0.0.1:8000/ , the API at /docs; SIGTERM drains and exits 0.
"""
DISTILL_EXAMPLES = """examples:
  bertkit distill --teacher runs/sst2 --student layers=3 --dataset sst2 --out runs/sst2-l3 --max-steps 600
  bertkit distill --teacher runs/sst2 --student layers=3 --dataset sst2 --out runs/sst2-l3 --max-steps 600 --resume
  bertkit distill --teacher runs/conll --student layers=3 --dataset conll2003 --out runs/conll-l3 --max-steps 300 \\
      --hidden-weight 1 --attention-weight 1
  bertkit pretrain --input ../shared/data/pretrain/en --tokenizer all-MiniLM-L6-v2 --config mini --out runs/mini-wp \\
      --max-steps 900 --utf8-errors replace                     # a student with the teacher's vocabulary
  bertkit distill --teacher runs/sst2 --student runs/mini-wp --dataset sst2 --out runs/sst2-mini --max-steps 800
  bertkit distill --teacher runs/reviews --student mini --train examples/reviews.tsv --text-column review \\
      --label-column stars --unlabelled examples/reviews.txt --augment 4 --augment-mlm runs/mini-wp \\
      --out runs/reviews-mini --epochs 5
the student shares the teacher's tokenizer; at the end, teacher and student dev metric, parameters and examples/s
are printed and written to OUT/distillation.json.
"""
PRETRAIN_EXAMPLES = """examples:
  bertkit pretrain --input ../shared/data/pretrain/en --tokenizer runs/tok-en --config mini --out runs/mini-en \\
      --max-steps 2000 --utf8-errors replace
"""


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
    from bertkit.inference.pipeline import pipeline

    model_name, texts = _split_model_and_texts(args.texts, args.model, None)
    if not texts:
        raise UserError("embed: give at least one TEXT")
    vectors = pipeline("feature-extraction", model=model_name, batch_size=args.batch_size)(texts)
    for text, v in zip(texts, vectors):
        print(json.dumps({"text": text, "embedding": [round(x, 6) for x in v]}))


def cmd_similarity(args) -> None:
    from bertkit.inference.pipeline import pipeline

    model_name, texts = _split_model_and_texts(args.texts, args.model, 2)
    if len(texts) != 2:
        raise UserError(f"similarity: expected [MODEL] TEXT_A TEXT_B, got {len(args.texts)} arguments")
    similarity = pipeline("sentence-similarity", model=model_name)
    cosine, = similarity({"source_sentence": texts[0], "sentences": [texts[1]]})
    print(json.dumps({"text_a": texts[0], "text_b": texts[1], "cosine": round(cosine, 6)}))


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


def _given(args, *drop: str) -> dict:
    """The flags the user gave (subcommands parse with argument_default=SUPPRESS, so the Python function's
    defaults are the only ones), less the parser's own entries."""
    return {k: v for k, v in vars(args).items() if k not in ("func", "command", "verbose", *drop)}


def _print_on_rank_0(result: dict, keys: tuple[str, ...]) -> None:
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 prints
        print(json.dumps({k: result.get(k) for k in keys}))


def cmd_pretrain(args) -> None:
    from bertkit.commands.pretrain import pretrain

    options = _given(args, "no_nsp", "sop")
    options["pair_task"] = "sop" if getattr(args, "sop", False) else "none" if getattr(args, "no_nsp", False) else "nsp"
    result = pretrain(**options)
    _print_on_rank_0(result, ("step", "stop_reason", "eval", "skipped_steps", "elapsed", "train_time", "tokens",
                              "peak_rss_mib", "out_dir"))


def cmd_finetune(args) -> None:
    from bertkit.commands.finetune import finetune

    result = finetune(**_given(args))
    _print_on_rank_0(result, ("step", "stop_reason", "eval", "best", "main_metric", "elapsed", "skipped_steps",
                              "out_dir"))


def cmd_distill(args) -> None:
    from bertkit.commands.distill import distill

    result = distill(**_given(args))
    _print_on_rank_0(result, ("step", "stop_reason", "teacher", "student", "kept", "speedup", "main_metric",
                              "elapsed", "out_dir"))


def cmd_evaluate(args) -> None:
    from bertkit.commands.finetune import evaluate

    print(json.dumps(evaluate(**_given(args))))


def cmd_predict(args) -> None:
    from bertkit.commands.predict import predict

    options = _given(args)
    if "top_k" in options and options["top_k"] == "all":
        options["top_k"] = None
    elif "top_k" in options:
        options["top_k"] = _positive_int(options["top_k"])
    if "ignore_labels" in options:
        options["ignore_labels"] = [x for x in options["ignore_labels"].split(",") if x]
    predict(**options)


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


def cmd_serve(args) -> None:
    try:
        from bertkit.serving.app import Settings
        from bertkit.serving.server import parse_model, serve
    except ImportError as e:
        raise UserError(f"bertkit serve needs the serve extra ({e.name} is missing): "
                        "pip install 'bertkit[serve]'") from None
    settings = Settings(api_key=args.api_key or os.environ.get("BERTKIT_API_KEY") or None,
                        backend=args.backend or "torch", int8=args.int8, device=args.device,
                        max_batch_tokens=args.max_batch_tokens, max_batch_size=args.max_batch_size,
                        max_wait_ms=args.max_wait_ms, max_queue_tokens=args.max_queue_tokens,
                        max_concurrent_requests=args.max_concurrent_requests,
                        max_inputs_per_request=args.max_inputs_per_request, max_input_chars=args.max_input_chars,
                        payload_limit=args.payload_limit)
    serve([parse_model(m) for m in args.models], settings, args.host, args.port, args.threads,
          log_level="info" if args.verbose else "warning", access_log=args.access_log)


def cmd_demo(args) -> None:
    from bertkit.commands.demo import run_demo

    run_demo(out_dir=args.out, minutes=args.minutes, data_dir=args.data_dir)


def cmd_data_download(args) -> None:
    from bertkit.tasks.datasets import download

    path = download(args.name, args.data_dir)
    print(json.dumps({"dataset": args.name, "path": str(path)}))


def _add_training_flags(s, lr: float, save_every: int, eval_every: int, seq_len: str = "128") -> None:
    """The training loop's flags. Unset flags are not passed on (argument_default=SUPPRESS): the Python
    function's defaults apply, and the help states them."""
    s.add_argument("--max-time", type=float, metavar="SECONDS", help="wall-clock budget (across resumes)")
    s.add_argument("--batch-size", type=_positive_int, help="per process (default 32)")
    s.add_argument("--grad-accum", type=_positive_int, help="micro-steps per optimizer step (default 1)")
    s.add_argument("--seq-len", type=_positive_int, help=f"tokens per sequence (default {seq_len})")
    s.add_argument("--lr", type=float, help=f"peak learning rate (default {lr:g})")
    s.add_argument("--warmup", type=float, help="< 1: fraction of the steps; >= 1: steps (default 0.06)")
    s.add_argument("--weight-decay", type=float, help="(default 0.01)")
    s.add_argument("--optimizer", choices=["adamw", "lamb"], help="(default adamw)")
    s.add_argument("--seed", type=int, help="(default 0)")
    s.add_argument("--save-every", type=int, metavar="STEPS", help=f"checkpoint interval (default {save_every})")
    s.add_argument("--save-minutes", type=float, metavar="MIN",
                   help="a checkpoint at least this often in wall time, and at each evaluation (default 5; 0: off)")
    s.add_argument("--keep-last", type=int, metavar="K", help="checkpoints kept (default 2)")
    s.add_argument("--eval-every", type=int, metavar="STEPS", help=f"0: at the end (default {eval_every})")
    s.add_argument("--log-every", type=_positive_int, metavar="STEPS", help="(default 10)")
    s.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from the latest checkpoint under --out (or from CKPT)")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="(default auto)")
    s.add_argument("--workers", type=int, dest="num_workers", help="DataLoader workers (default 0)")
    s.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bar")


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


def _add_labelled_data_flags(s) -> None:
    """finetune's and distill's: the data, and how much of it a run takes."""
    _add_data_flags(s, ("--train", "--dev"))
    s.add_argument("--epochs", type=float, help="passes over the training data (default 3 unless --max-steps)")
    s.add_argument("--max-steps", type=_positive_int)
    s.add_argument("--max-train-examples", type=_positive_int)
    s.add_argument("--max-eval-examples", type=_positive_int)


def _add_backend_flags(s) -> None:
    s.add_argument("--backend", choices=("torch", "onnx"),
                   help="torch (default) or onnx: ONNX Runtime on the model's exported graph (exported once)")
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

    from bertkit.tasks import task_names

    quiet = argparse.SUPPRESS
    s = sub.add_parser("finetune", help="fine-tune a task head on labelled data", argument_default=quiet,
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FINETUNE_EXAMPLES)
    s.add_argument("--task", choices=task_names(trainable_only=True), help="implied by --dataset")
    s.add_argument("--model", help=f"pretrained directory or name (default {DEFAULT_MODEL})")
    s.add_argument("--out", required=True, metavar="DIR")
    _add_labelled_data_flags(s)
    s.add_argument("--doc-stride", type=_positive_int, help="question answering: window overlap (default 128)")
    s.add_argument("--word-splitter", choices=("treebank", "bert"), help="token classification: how predict will "
                   "split raw text into words, as your data's tokens are (default treebank, as CoNLL and WNUT)")
    s.add_argument("--validation-fraction", type=float, metavar="F",
                   help="hold out F of the training examples and keep the checkpoint with the best main metric on "
                        "them (default: keep the final model; dev is only reported, never used to choose)")
    _add_training_flags(s, lr=5e-5, save_every=0, eval_every=0, seq_len="128; 384 for question answering")
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("distill", help="distil a fine-tuned model into a smaller student on the same data",
                       argument_default=quiet, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=DISTILL_EXAMPLES)
    s.add_argument("--teacher", required=True, metavar="DIR", help="a fine-tuned checkpoint (its task is the student's)")
    s.add_argument("--student", metavar="SPEC", help="layers=K (K of the teacher's layers, spread as DistilBERT), a "
                   "preset (tiny mini small medium ...), or a checkpoint directory with the teacher's vocabulary "
                   "(default layers=3)")
    s.add_argument("--out", required=True, metavar="DIR")
    _add_labelled_data_flags(s)
    s.add_argument("--alpha", type=float, help="weight of the soft targets; 1 - alpha on the labels (default 0.5)")
    s.add_argument("--temperature", type=float, help="softmax temperature of the soft targets (default 2)")
    s.add_argument("--hidden-weight", type=float, help="weight of the hidden-state MSE on mapped layers (default 0)")
    s.add_argument("--attention-weight", type=float,
                   help="weight of the MiniLM self-attention relation loss, last layers (default 0)")
    s.add_argument("--relation-heads", type=_positive_int,
                   help="relation heads of that loss (default: gcd of the two models' head counts)")
    s.add_argument("--unlabelled", metavar="FILE", help="more inputs, one a line (pairs: TAB between), labelled by "
                   "the teacher")
    s.add_argument("--augment", type=int, metavar="N", help="N TinyBERT word-replacement copies of each training "
                   "example, labelled by the teacher (default 0)")
    s.add_argument("--augment-mlm", metavar="DIR", help="the BERT with an MLM head that proposes the words")
    s.add_argument("--augment-p", type=float, help="chance that a word is replaced (default 0.4)")
    s.add_argument("--augment-top-k", type=_positive_int, help="candidates per word (default 15)")
    s.add_argument("--cache-dir", help="teacher outputs cache (default $BERTKIT_CACHE_DIR or ~/.cache/bertkit)")
    s.add_argument("--speed-repeats", type=int, metavar="R", help="timed dev passes per model in the report "
                   "(default 3; 0: no timing)")
    _add_training_flags(s, lr=1e-4, save_every=0, eval_every=0)
    s.set_defaults(func=cmd_distill)

    s = sub.add_parser("evaluate", help="metrics of a model on labelled data (JSON on the last line)",
                       argument_default=quiet, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=EVALUATE_EXAMPLES)
    s.add_argument("--model", required=True, metavar="DIR")
    s.add_argument("--task", choices=task_names(), help="default: the model's (its config)")
    _add_data_flags(s, ("--data",))
    s.add_argument("--split", help="--dataset's split: dev (default) or test where it has one (mrpc)")
    s.add_argument("--batch-size", type=_positive_int, help="(default 64)")
    s.add_argument("--max-examples", type=_positive_int)
    _add_backend_flags(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="a model's pipeline on texts or a file, one JSON line per input",
                       argument_default=quiet, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=PREDICT_EXAMPLES)
    s.add_argument("texts", nargs="*", metavar="TEXT", default=[])
    s.add_argument("--model", required=True, metavar="DIR")
    s.add_argument("--task", choices=task_names(), help="default: the model's (its config)")
    s.add_argument("--input", metavar="FILE", help="one text a line, JSON lines (the task's fields), or TSV/CSV "
                                                  "with a header")
    s.add_argument("--output", metavar="FILE", help="JSON lines, in input order (default: stdout)")
    s.add_argument("--top-k", metavar="K|all", help="classification, fill-mask, question answering: results per input")
    s.add_argument("--function-to-apply", choices=("softmax", "sigmoid", "none"), help="classification scores")
    s.add_argument("--aggregation-strategy", choices=("none", "simple", "first", "average", "max"),
                   help="token classification: tokens, or words grouped into entities (default first)")
    s.add_argument("--word-splitter", choices=("treebank", "bert"),
                   help="token classification: how raw text splits into words (default treebank, as CoNLL)")
    s.add_argument("--ignore-labels", metavar="A,B", help="token classification: labels left out (default O)")
    s.add_argument("--doc-stride", type=_positive_int, help="question answering: window overlap")
    s.add_argument("--max-answer-len", type=_positive_int, help="question answering: tokens (default 15)")
    s.add_argument("--handle-impossible-answer", action="store_true", help="question answering: allow no answer")
    s.add_argument("--batch-size", type=_positive_int, help="(default 64)")
    s.add_argument("--chunk-rows", type=_positive_int, help="rows read and predicted at a time: memory stays bounded "
                                                            "by it (default 2048)")
    s.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bar")
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

    s = sub.add_parser("serve", help="an HTTP server for models: HF Inference API, OpenAI embeddings, a web page",
                       epilog=SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("models", nargs="*", metavar="[NAME=]DIR",
                   help=f"checkpoints to serve, each at /models/NAME (default {DEFAULT_MODEL})")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="default 8000")
    s.add_argument("--api-key", help="require Authorization: Bearer KEY (default $BERTKIT_API_KEY; none: open)")
    _add_backend_flags(s)
    s.add_argument("--device", help="cpu or cuda[:N] (default: CUDA when there is one, for --backend torch)")
    s.add_argument("--threads", type=_positive_int, help="torch threads for inference (default: all cores)")
    s.add_argument("--max-batch-tokens", type=_positive_int,
                   help="padded tokens per forward pass (default 4096 on CPU, 16384 on CUDA)")
    s.add_argument("--max-batch-size", type=_positive_int, default=256,
                   help="sequences per forward pass; 1 turns batching off (default 256)")
    s.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="how long an idle worker waits to fill a batch (default 2)")
    s.add_argument("--max-queue-tokens", type=_positive_int,
                   help="tokens waiting per model; beyond, 429 with Retry-After (default 2 x --max-batch-tokens)")
    s.add_argument("--max-concurrent-requests", type=_positive_int, default=512,
                   help="requests in flight; beyond, 429 (default 512)")
    s.add_argument("--max-inputs-per-request", type=_positive_int, default=64, help="beyond, 413 (default 64)")
    s.add_argument("--max-input-chars", type=_positive_int, default=20000,
                   help="characters of one text; beyond, 413 unless the request says truncate (default 20000)")
    s.add_argument("--payload-limit", type=_positive_int, default=2_000_000,
                   help="bytes of a request body; beyond, 413 (default 2000000)")
    s.add_argument("--access-log", action="store_true", help="log each request's method, path and status "
                                                              "(bodies are never logged)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("demo", help="the main job: fine-tune all-MiniLM-L6-v2 on SST-2, evaluate, classify")
    s.add_argument("--out", type=Path, default=Path("runs/demo-sst2"), metavar="DIR")
    s.add_argument("--minutes", type=float, default=8.0, help="training budget")
    s.add_argument("--data-dir", help="datasets folder (default $BERTKIT_DATA_DIR or ../shared/data)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("data", help="datasets")
    dsub = s.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    d = dsub.add_parser("download", help="fetch a named dataset's files, SHA-256 checked, into CACHE_DIR/datasets/")
    d.add_argument("name")
    d.add_argument("--data-dir", help="datasets folder (default $BERTKIT_DATA_DIR or ../shared/data)")
    d.set_defaults(func=cmd_data_download)

    s = sub.add_parser("pretrain", help="pretrain BERT (MLM + NSP) on raw text", argument_default=quiet,
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=PRETRAIN_EXAMPLES)
    s.add_argument("--input", nargs="+", required=True, metavar="PATH", help="text files or folders (UTF-8)")
    s.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory or model name")
    s.add_argument("--config", required=True, metavar="PRESET|FILE", help="tiny|mini|small|medium|base|large or a config.json")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--max-steps", type=_positive_int)
    _add_training_flags(s, lr=1e-4, save_every=500, eval_every=500)
    s.add_argument("--wwm", action="store_true", help="whole-word masking")
    pair = s.add_mutually_exclusive_group()
    pair.add_argument("--no-nsp", action="store_true", help="MLM only")
    pair.add_argument("--sop", action="store_true", help="sentence-order prediction instead of NSP")
    s.add_argument("--heldout", type=float, help="share of documents held out for evaluation (default 0.05)")
    s.add_argument("--utf8-errors", choices=["strict", "replace"],
                   help="replace: drop bytes that are not UTF-8 (warned) instead of stopping (default strict)")
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
