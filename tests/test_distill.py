"""Distillation: each loss against a hand computation, the layer-copied student against the teacher's weights, the
teacher cache against the live teacher, and `bertkit distill` end to end on tiny models (transformers loads the
student with the same logits). Exact resume after kill -9 is in test_resume.py (slow)."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from clihelp import run_cli
from conftest import require_module, tiny_checkpoint

from bertkit import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertTokenizer
from bertkit.commands.distill import build_student, spread_layers, student_from_layers
from bertkit.data.augment import augment_words, word_candidates
from bertkit.tasks.base import HeadLoss
from bertkit.tasks.common import pad_batch
from bertkit.training.distillation import (DistillationObjective, Student, TeacherCache, collate_with_teacher,
                                           hidden_mse, layer_map, masked_soft_kl, relation_kl, score_mse, soft_bce,
                                           soft_kl, teacher_outputs)

WORDS = "the a film movie great good bad awful plot actor story scene music long short dull bright".split()


def softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


# ---- losses by hand -----------------------------------------------------------------------------------------


def test_soft_kl_with_temperature_is_the_hand_computed_kl_times_t_squared():
    s, t = [0.0, 1.0, -1.0], [2.0, 0.0, 0.5]
    for T in (1.0, 2.0, 4.0):
        ps, pt = softmax([x / T for x in s]), softmax([x / T for x in t])
        kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))
        got = soft_kl(torch.tensor([s]), torch.tensor([t]), T)
        assert got.item() == pytest.approx(kl * T * T, rel=1e-5)
    # two rows sum; equal logits cost nothing
    assert soft_kl(torch.tensor([s, s]), torch.tensor([t, t]), 2.0).item() == \
        pytest.approx(2 * soft_kl(torch.tensor([s]), torch.tensor([t]), 2.0).item(), rel=1e-6)
    assert soft_kl(torch.tensor([t]), torch.tensor([t]), 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_the_t_squared_scale_keeps_the_gradient_size_as_t_grows():
    """Hinton et al.: the soft-target gradient scales as 1/T^2, which T^2 undoes; at large T the gradient w.r.t.
    the student's logits tends to (s - t) / C (zero-mean logits), whatever T."""
    s = torch.tensor([[0.3, -0.1, -0.2]], requires_grad=True)
    t = torch.tensor([[0.5, 0.2, -0.7]])
    grads = []
    for T in (50.0, 200.0):
        s.grad = None
        soft_kl(s, t, T).backward()
        grads.append(s.grad.clone())
    expected = (s.detach() - s.detach().mean()) - (t - t.mean())
    for g in grads:
        assert torch.allclose(g, expected / 3, atol=2e-3)


def test_regression_and_multi_label_soft_losses_by_hand():
    assert score_mse(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.5], [1.0]])).item() == pytest.approx(0.25 + 4)
    s, t, T = [0.0, 2.0], [1.0, -1.0], 2.0
    def bce(x, y):  # target y in [0, 1], logit x
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))
    targets = [1 / (1 + math.exp(-v / T)) for v in t]
    expected = sum(bce(x / T, y) for x, y in zip(s, targets)) / 2 * T * T
    assert soft_bce(torch.tensor([s]), torch.tensor([t]), T).item() == pytest.approx(expected, rel=1e-5)


def test_masked_kl_ignores_padding():
    s, t = torch.randn(1, 5), torch.randn(1, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    padded = torch.cat([s[:, :3], torch.full((1, 2), 9.0)], 1)  # garbage where the mask is 0
    got = masked_soft_kl(padded, t, mask, 2.0)
    assert got.item() == pytest.approx(soft_kl(s[:, :3], t[:, :3], 2.0).item(), rel=1e-5)


def test_hidden_mse_with_a_learned_projection_by_hand():
    config = BertConfig(vocab_size=99, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)
    student = Student(BertForSequenceClassification(config), layer_map(4, 2), teacher_width=12)
    assert [tuple(p.weight.shape) for p in student.projections] == [(12, 8), (12, 8)]
    ids = torch.tensor([[2, 5, 7, 0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    out, hidden, _ = student(distill=True, input_ids=ids, attention_mask=mask)
    proj = student.projections[0]
    assert torch.allclose(hidden[0], out.hidden_states[1] @ proj.weight.T + proj.bias)
    # the loss itself: mean over dimensions, summed over real tokens
    s = torch.tensor([[[1.0, 2.0], [3.0, 3.0], [7.0, 7.0]]])
    t = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    assert hidden_mse(s, t, torch.tensor([[1, 1, 0]])).item() == pytest.approx((1 + 4) / 2 + (4 + 4) / 2)
    assert layer_map(6, 3) == [(1, 2), (2, 4), (3, 6)] and layer_map(12, 4) == [(1, 3), (2, 6), (3, 9), (4, 12)]


def naive_relation_kl(s: torch.Tensor, t: torch.Tensor, mask: list[int], heads: int) -> float:
    """MiniLMv2's relation KL written with loops: per relation head r and real query i, KL over real keys j of
    softmax(<x_i^r, x_j^r> / sqrt(d_r))."""
    real = [j for j, m in enumerate(mask) if m]
    total = 0.0
    for x_s, x_t in zip(s, t):  # rows
        for r in range(heads):
            def part(x):
                d = x.shape[-1] // heads
                return x[:, r * d:(r + 1) * d].tolist(), d
            (vs, ds), (vt, dt) = part(x_s), part(x_t)
            for i in real:
                ps = softmax([sum(a * b for a, b in zip(vs[i], vs[j])) / math.sqrt(ds) for j in real])
                pt = softmax([sum(a * b for a, b in zip(vt[i], vt[j])) / math.sqrt(dt) for j in real])
                total += sum(q * math.log(q / p) for p, q in zip(ps, pt))
    return total


def test_attention_relations_transfer_across_head_counts_and_widths():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 8), torch.randn(2, 4, 12)  # a student of width 8 (say 2 heads), a teacher of 12 (3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    for heads in (1, 2, 4):
        got = relation_kl(s, t, mask, heads).item()
        assert got == pytest.approx(naive_relation_kl(s, t, [1, 1, 1, 0], heads), rel=1e-4)
    assert relation_kl(t, t, mask, 3).item() == pytest.approx(0.0, abs=1e-5)


# ---- students ---------------------------------------------------------------------------------------------------


def test_layers_student_equals_the_teacher_layers_it_was_made_from(tmp_path):
    assert spread_layers(6, 3) == [0, 2, 4] and spread_layers(12, 6) == [0, 2, 4, 6, 8, 10]
    assert spread_layers(6, 4) == [0, 1, 3, 4] and spread_layers(4, 4) == [0, 1, 2, 3]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=6, num_attention_heads=2,
                        intermediate_size=32, id2label={0: "a", 1: "b", 2: "c"})
    teacher = BertForSequenceClassification(config)
    student, made = student_from_layers(teacher, 3)
    assert student.config.num_hidden_layers == 3 and "[0, 2, 4]" in made
    t, s = teacher.state_dict(), student.state_dict()
    for key, value in s.items():
        if ".layer." in key:
            i = int(key.split(".layer.")[1].split(".")[0])
            source = key.replace(f".layer.{i}.", f".layer.{[0, 2, 4][i]}.")
        else:
            source = key
        assert torch.equal(value, t[source]), key
    assert set(k for k in s if ".layer." not in k) == set(k for k in t if ".layer." not in k)  # embeddings, head


def test_a_student_checkpoint_must_share_the_teachers_vocabulary(tmp_path):
    from bertkit.errors import UserError
    from bertkit.inference.pipeline import load_task

    teacher_dir = tiny_checkpoint(tmp_path / "t", "BertForSequenceClassification", ("neg", "pos"))
    other = tmp_path / "other"
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64)
    BertForSequenceClassification(config).save_pretrained(other)
    _, _, the_task = load_task(teacher_dir)
    teacher = BertForSequenceClassification.from_pretrained(teacher_dir)
    with pytest.raises(UserError, match="vocabulary"):
        build_student(str(other), teacher, teacher_dir, the_task)
    with pytest.raises(UserError, match="layers=K, a preset"):
        build_student("layerz=2", teacher, teacher_dir, the_task)
    mini, made = build_student("tiny", teacher, teacher_dir, the_task)
    assert mini.config.hidden_size == 128 and mini.config.vocab_size == 30522 and mini.config.num_labels == 2


# ---- the teacher cache --------------------------------------------------------------------------------------------


def test_the_cache_gives_the_same_loss_as_the_live_teacher(tmp_path):
    teacher_dir = tiny_checkpoint(tmp_path / "t", "BertForSequenceClassification", ("neg", "pos"))
    teacher = BertForSequenceClassification.from_pretrained(teacher_dir)
    tok = BertTokenizer.from_pretrained(teacher_dir)
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(2, 20))) for _ in range(24)]
    enc = tok(texts)
    features = [{"input_ids": i, "token_type_ids": t, "labels": n % 2}
                for n, (i, t) in enumerate(zip(enc["input_ids"], enc["token_type_ids"]))]
    collate = lambda rows: pad_batch(rows)  # noqa: E731
    key = TeacherCache.key(teacher_dir, features, [1, 2], 1)
    cache = TeacherCache.build(tmp_path / "cache", key, teacher, features, collate, [1, 2], 1, batch_size=5,
                               progress=False)
    assert TeacherCache.build(tmp_path / "cache", key, teacher, features, collate, [1, 2], 1).path == cache.path
    torch.manual_seed(1)
    student = Student(BertForSequenceClassification(BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=128)), [(1, 1), (2, 2)], teacher_width=32, attention_layer=1).eval()
    hard = HeadLoss(("labels",), lambda b: b["labels"].shape[0], lambda out, b: (out.logits.argmax(-1) == b["labels"]).sum())
    objective = DistillationObjective(hard, alpha=0.7, temperature=3.0, hidden_weight=1.0, attention_weight=1.0,
                                      relation_heads=2)
    indices = [3, 17, 5, 9, 0, 22, 11]  # a batch mixing lengths, unlike the cache's length-sorted ones
    rows = [features[i] for i in indices]
    cached = collate_with_teacher(collate, cache)(rows, indices, 0)
    live = collate(rows)
    live.update({f"teacher_{k}": v for k, v in teacher_outputs(teacher, live, [1, 2], 1).items()})
    assert set(cached) == set(live)
    a, _ = objective(student, cached)
    b, _ = objective(student, live)
    assert set(a) == {"hard", "soft", "hidden", "attention"}
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item(), rel=1e-5, abs=1e-6), k


# ---- augmentation ---------------------------------------------------------------------------------------------


def test_word_replacement_proposes_whole_words_and_is_seeded(tmp_path):
    tok = BertTokenizer.from_pretrained("all-MiniLM-L6-v2")
    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64))
    sentences = [["the", "movie", "was", "great"], ["bad", "acting"]]
    cands = word_candidates(mlm, tok, sentences, top_k=5)
    assert [len(c) for c in cands] == [4, 2]
    for words, per_word in zip(sentences, cands):
        for word, c in zip(words, per_word):
            assert len(c) == 5 and word not in c
            assert all(not x.startswith("##") and not x.startswith("[") for x in c)
    a = augment_words(sentences[0], cands[0], 4, 0.5, random.Random(3))
    assert a == augment_words(sentences[0], cands[0], 4, 0.5, random.Random(3))
    assert all(len(x) == 4 and x != sentences[0] for x in a)
    assert augment_words(sentences[0], cands[0], 3, 0.0, random.Random(0)) == []  # nothing replaced: no copies


# ---- the command end to end -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    teacher = tiny_checkpoint(root / "teacher", "BertForSequenceClassification", ("neg", "pos"))
    rng = random.Random(0)
    lines = [f"{' '.join(rng.choices(WORDS, k=rng.randint(2, 20)))}\t{rng.choice(['pos', 'neg'])}" for _ in range(64)]
    (root / "train.tsv").write_text("text\tlabel\n" + "\n".join(lines) + "\n")
    (root / "more.txt").write_text("\n".join(" ".join(rng.choices(WORDS, k=6)) for _ in range(10)) + "\n")
    torch.manual_seed(0)
    mlm = root / "mlm"
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(mlm)
    BertTokenizer.from_pretrained("all-MiniLM-L6-v2").save_pretrained(mlm)
    return root, teacher


@pytest.mark.slow  # ~20 s of subprocess: `make test-slow` (CI runs it)
def test_distill_end_to_end_student_loads_in_transformers_with_identical_logits(teacher_and_data, tmp_path):
    transformers = require_module("transformers")
    root, teacher = teacher_and_data
    out = tmp_path / "student"
    r = run_cli("distill", "--teacher", teacher, "--student", "tiny", "--train", root / "train.tsv", "--dev",
                root / "train.tsv", "--out", out, "--max-steps", 6, "--batch-size", 8, "--hidden-weight", 1,
                "--attention-weight", 1, "--unlabelled", root / "more.txt", "--augment", 2, "--augment-mlm",
                root / "mlm", "--speed-repeats", 1, "--no-progress", "--cache-dir", tmp_path / "cache")
    result = json.loads(r.stdout.splitlines()[-1])
    report = json.loads((out / "distillation.json").read_text())
    assert result["teacher"]["parameters"] == report["teacher"]["parameters"] > 0
    assert report["student"]["parameters"] != report["teacher"]["parameters"]
    assert report["training_features"]["labelled"] == 64 and report["training_features"]["teacher_labelled"] > 10
    assert report["speedup"] > 0 and set(report["student"]["eval"]) >= {"accuracy", "f1"}
    assert (out / "distillation.safetensors").exists()  # the 128 -> 32 projections, beside the student
    assert json.loads((out / "config.json").read_text())["distilled_from"] == str(teacher)
    train_lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"soft_loss", "hard_loss", "hidden_loss", "attention_loss"} <= set(train_lines[0])

    ours = BertForSequenceClassification.from_pretrained(out)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = BertTokenizer.from_pretrained(out)
    batch = tok(["a great film", "the plot was dull and long"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(ours(**batch).logits, theirs(**batch).logits, atol=1e-5)


@pytest.mark.slow  # ~20 s: `make test-slow`
@pytest.mark.parametrize("task", ["token-classification", "question-answering"])
def test_distill_token_classification_and_qa(tmp_path, task):
    """Each family's soft loss runs through the command: per token for NER, start/end distributions for QA."""
    from test_resume import task_files  # the small files of each family

    files = task_files(tmp_path)
    arch = {"token-classification": "BertForTokenClassification", "question-answering": "BertForQuestionAnswering"}
    labels = ("O", "B-PER", "B-LOC") if task == "token-classification" else None
    teacher = tiny_checkpoint(tmp_path / "teacher", arch[task], labels)
    seq = ["--seq-len", "96"] if task == "question-answering" else []
    r = run_cli("distill", "--teacher", teacher, "--student", "layers=1", "--train", files[task], "--dev", files[task],
                "--out", tmp_path / "out", "--max-steps", 4, "--batch-size", 4, "--speed-repeats", 1, "--no-progress",
                "--cache-dir", tmp_path / "cache", *seq)
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["step"] == 4 and result["student"]["eval"]["f1"] >= 0 and result["speedup"] > 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["soft_loss"] > 0


def test_distill_mistakes_are_one_line_errors(teacher_and_data, tmp_path, capsys):
    from bertkit.cli import main

    root, teacher = teacher_and_data
    common = ["--train", root / "train.tsv", "--out", tmp_path / "o", "--max-steps", 1, "--no-progress",
              "--student", "layers=1", "--cache-dir", tmp_path / "cache"]
    for extra, message in (
        (["--student", "layers=9"], "the teacher has 2 layers"),
        (["--student", "nonsense"], "expected layers=K"),
        (["--augment", "2"], "--augment needs --augment-mlm"),
        (["--alpha", "1.5"], "--alpha 1.5"),
        (["--unlabelled", tmp_path / "missing.txt"], "--unlabelled"),
    ):
        code = main(["distill", "--teacher", str(teacher), *map(str, common), *map(str, extra)])  # in process: fast
        err = capsys.readouterr().err
        assert code == 2, err[-2000:]
        assert message in err and len(err.strip().splitlines()) == 1, err
