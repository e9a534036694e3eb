"""The `bertkit` command line, run as a user would: output format, defaults and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from clihelp import run_cli as bertkit

import bertkit as library


def test_similarity_default_model_orders_paraphrase_above_unrelated():
    close = json.loads(bertkit("similarity", "A man is playing a guitar.", "Someone plays the guitar.").stdout)
    far = json.loads(bertkit("similarity", "all-MiniLM-L6-v2", "A man is playing a guitar.", "The stock market fell.").stdout)
    assert close["cosine"] > 0.6 > far["cosine"]


def test_embed_prints_one_normalised_vector_per_text():
    lines = bertkit("embed", "hello world", "second text").stdout.splitlines()
    vectors = [json.loads(line)["embedding"] for line in lines]
    assert len(vectors) == 2 and len(vectors[0]) == 384
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-4
    # the mean-pooled, normalised embeddings the library gives (checked against transformers in test_inference)
    expected = library.pipeline("feature-extraction", model="all-MiniLM-L6-v2")(["hello world", "second text"])
    assert vectors == [pytest.approx(v, abs=1e-5) for v in expected]
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-2)


def test_info_reports_config_and_parameters():
    info = json.loads(bertkit("info").stdout)
    assert info["layers"] == 6 and info["hidden_size"] == 384 and info["heads"] == 12
    assert info["parameters"]["total_encoder_with_pooler"] == 22_713_216  # all-MiniLM-L6-v2's BertModel


@pytest.mark.parametrize(
    "args, message",
    [
        (["similarity", "only one text"], "expected [MODEL] TEXT_A TEXT_B"),
        (["similarity", "/no/such/dir", "a", "b"], "not a checkpoint directory"),
        (["info", "/no/such/dir"], "no such checkpoint directory"),
        (["embed", "--batch-size", "many", "x"], "invalid int value"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(args, message):
    r = bertkit(*args, check=False)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
