"""NER on raw text versus on gold words: a fine-tuned token-classification checkpoint's entity F1 when bertkit's
pipeline sees detokenized sentences (as a user's text would be), scored by exact (type, start, end) character
spans, next to its F1 on the dataset's own words (`bertkit.evaluate`). Each dev sentence is detokenized with
sacremoses' MosesDetokenizer; every gold token is found in the text by a sequential search (allowing quote and
HTML-escape changes), so gold IOB2 entities become character spans; sentences that cannot be aligned are skipped
and counted. Scores are percentages. Prints one JSON object: the default word splitter ("treebank") and
word_splitter="bert" for contrast, both through the pipeline (aggregation "first", entities grouped as transformers
does), and the treebank words' tags read strictly as evaluation reads gold words (the splitting alone).
"""

from __future__ import annotations

import argparse
import html
import json
import time
from pathlib import Path

EPILOG = """examples:
  python benchmarks/ner_raw_text.py --model runs/conll --dataset conll2003
  python benchmarks/ner_raw_text.py --model runs/wnut --dataset wnut17 --out wnut_raw.json
  python benchmarks/ner_raw_text.py --model runs/conll --dataset conll2003 --limit 200 --examples 20
(needs sacremoses: pip install sacremoses)
"""

QUOTES = {'``': '"', "''": '"', '"': '"', '`': "'", "'": "'"}
QUOTE_CHARS = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a fine-tuned token-classification checkpoint directory")
    p.add_argument("--dataset", required=True, choices=["conll2003", "wnut17"], help="its dev split is used")
    p.add_argument("--data-dir", default=None, help="datasets folder (default $BERTKIT_DATA_DIR or ../shared/data)")
    p.add_argument("--limit", type=int, default=None, help="first N dev sentences (the gold-word F1 uses them all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--examples", type=int, default=10, help="list this many mismatching sentences per splitter")
    p.add_argument("--out", default=None, help="also write the JSON report to FILE")
    return p.parse_args(argv)


def candidates(token: str) -> list[str]:
    """What a gold token may look like in the detokenized text."""
    out = [token]
    for c in (html.unescape(token), QUOTES.get(token)):
        if c and c not in out:
            out.append(c)
    return out


def align(tokens: list[str], text: str) -> list[tuple[int, int]] | None:
    """Each token's (start, end) in `text`, searched left to right; only whitespace may lie between two tokens.
    A quote token may have been rewritten into any quote character. None when some token cannot be placed."""
    spans, pos = [], 0
    for token in tokens:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        for c in candidates(token):
            if text.startswith(c, pos):
                spans.append((pos, pos + len(c)))
                pos += len(c)
                break
        else:
            if token in QUOTES and pos < len(text) and text[pos] in QUOTE_CHARS:
                spans.append((pos, pos + 1))
                pos += 1
            else:
                return None
    return spans if text[pos:].strip() == "" else None


def gold_entities(tags: list[str], spans: list[tuple[int, int]]) -> set[tuple[str, int, int]]:
    """IOB2 tags -> {(type, start char, end char)}; an I- that does not continue its type starts an entity."""
    ents, cur = set(), None  # cur = [type, start, end]
    for tag, (s, e) in zip(tags, spans):
        if tag.startswith("I-") and cur and cur[0] == tag[2:]:
            cur[2] = e
            continue
        if cur:
            ents.add(tuple(cur))
        cur = [tag[2:], s, e] if tag[:2] in ("B-", "I-") else None
    if cur:
        ents.add(tuple(cur))
    return ents


def prf(tp: int, n_pred: int, n_gold: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0  # percentages, as bertkit evaluate reports them
    return {"precision": round(100 * p, 2), "recall": round(100 * r, 2), "f1": round(100 * f, 2),
            "tp": tp, "predicted": n_pred, "gold": n_gold}


def gold_word_scores(model: str, dataset: str, data_dir: str | None) -> dict:
    import bertkit

    return dict(bertkit.evaluate(model, dataset=dataset, data_dir=data_dir)) | {"via": "bertkit.evaluate"}


def score(pipe, texts, golds, splitter: str, batch_size: int, n_examples: int) -> dict:
    t0 = time.time()
    preds = []
    for i in range(0, len(texts), batch_size):
        chunk = pipe(texts[i:i + batch_size], word_splitter=splitter)
        if len(chunk) != len(texts[i:i + batch_size]):
            raise RuntimeError(f"pipeline returned {len(chunk)} results for {len(texts[i:i + batch_size])} texts")
        preds.extend(chunk)
    seconds = time.time() - t0
    tp = n_pred = n_gold = 0
    by_type: dict[str, list[int]] = {}
    examples = []
    for text, gold, ents in zip(texts, golds, preds):
        pred = {(e["entity_group"], int(e["start"]), int(e["end"])) for e in ents}
        hit = pred & gold
        tp, n_pred, n_gold = tp + len(hit), n_pred + len(pred), n_gold + len(gold)
        for kind, group in (("tp", hit), ("pred", pred), ("gold", gold)):
            for t, _, _ in group:
                by_type.setdefault(t, [0, 0, 0])[("tp", "pred", "gold").index(kind)] += 1
        if pred != gold and len(examples) < n_examples:
            examples.append({"text": text,
                             "missed": sorted(f"{t}:{text[s:e]!r}@{s}-{e}" for t, s, e in gold - pred),
                             "spurious": sorted(f"{t}:{text[s:e]!r}@{s}-{e}" for t, s, e in pred - gold)})
    return {**prf(tp, n_pred, n_gold), "seconds": round(seconds, 1),
            "per_type": {t: prf(*v) for t, v in sorted(by_type.items())}, "mismatch_examples": examples,
            "_pred": [{(e["entity_group"], int(e["start"]), int(e["end"])) for e in ents} for ents in preds]}


def score_strict(pipe, texts, golds) -> dict:
    """The same treebank words of each text, tagged by the first piece of each word as evaluation does, and read
    strictly (seqeval IOB2, as `bertkit.evaluate` scores gold words) instead of transformers' grouping, which
    makes an entity of an I- tag after O: what is left of the gap is the word splitting alone."""
    from seqeval.scheme import IOB2, Entities

    from bertkit.tasks.examples import TokenExample
    from bertkit.tasks.token_classification import prepare_features, split_words, word_predictions

    task = pipe.task
    spans = [split_words(text, task.tokenizer, "treebank") for text in texts]
    examples = [TokenExample([text[a:b] for a, b in s], None, "raw") for text, s in zip(texts, spans)]
    features = prepare_features(examples, task.tokenizer, None, task.max_length)
    tags = word_predictions(examples, features, task.logits(pipe.model, features), task.labels)
    tp = n_pred = n_gold = 0
    for s, sentence_tags, gold in zip(spans, tags, golds):
        pred = {(e.tag, s[e.start][0], s[e.end - 1][1]) for e in Entities([sentence_tags], IOB2).entities[0]}
        tp, n_pred, n_gold = tp + len(pred & gold), n_pred + len(pred), n_gold + len(gold)
    return prf(tp, n_pred, n_gold)


def main(argv=None):
    args = parse_args(argv)
    from sacremoses import MosesDetokenizer

    import bertkit
    from bertkit.tasks.datasets import load_dataset

    model = str(Path(args.model).expanduser())
    examples = [e for e in load_dataset(args.dataset, "dev", data_dir=args.data_dir).examples if e.tokens]
    if args.limit:
        examples = examples[:args.limit]
    detok = MosesDetokenizer(lang="en")
    texts, golds, unaligned, changed = [], [], [], 0
    for ex in examples:
        text = detok.detokenize(ex.tokens)
        spans = align(ex.tokens, text)
        if spans is None:
            unaligned.append({"source": ex.source, "tokens": " ".join(ex.tokens), "text": text})
            continue
        changed += text != " ".join(ex.tokens)
        texts.append(text)
        golds.append(gold_entities(ex.tags, spans))

    gold_word = gold_word_scores(model, args.dataset, args.data_dir)
    pipe = bertkit.pipeline("token-classification", model=model, aggregation_strategy="first")
    report = {"model": model, "dataset": args.dataset, "split": "dev", "sentences": len(examples),
              "aligned": len(texts), "unaligned": len(unaligned), "unaligned_examples": unaligned[:5],
              "detokenized_differs_from_space_join": changed,
              "gold_word": {k: gold_word.get(k) for k in ("precision", "recall", "f1", "via")}}
    for splitter in ("treebank", "bert"):
        r = score(pipe, texts, golds, splitter, args.batch_size, args.examples)
        r["f1_minus_gold_word_f1"] = (round(r["f1"] - gold_word["f1"], 2)
                                      if isinstance(gold_word.get("f1"), (int, float)) else None)
        report[f"raw_text_{splitter}"] = r
    strict = score_strict(pipe, texts, golds)
    strict["f1_minus_gold_word_f1"] = round(strict["f1"] - gold_word["f1"], 2)
    report["raw_text_treebank_strict_reading"] = strict
    # Sentences where the two word splitters disagree: what the splitter alone changes.
    a, b = report["raw_text_treebank"].pop("_pred"), report["raw_text_bert"].pop("_pred")
    show = lambda text, ents: sorted(f"{t}:{text[s:e]!r}@{s}-{e}" for t, s, e in ents)  # noqa: E731
    differ = [i for i in range(len(texts)) if a[i] != b[i]]
    report["splitters_disagree"] = len(differ)
    report["splitter_examples"] = [{"text": texts[i], "gold": show(texts[i], golds[i]), "treebank": show(texts[i], a[i]),
                                    "bert": show(texts[i], b[i])} for i in differ[:args.examples]]
    text = json.dumps(report, indent=1, ensure_ascii=False)
    if args.out:
        Path(args.out).expanduser().write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
