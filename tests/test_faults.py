"""Storage faults and numerical edge cases of the training loop, in process: a save that runs out of space, damaged
checkpoints at resume, NaN metrics, fp16 overflow steps, fully padded rows, and which examples sit out an epoch."""

from __future__ import annotations

import errno
import logging

import pytest
import torch

from bertkit import BertConfig, BertModel, UserError
from bertkit.training import Trainer, TrainingArgs
from bertkit.training import checkpointing
from bertkit.training.checkpointing import find_resume_checkpoint, list_checkpoints, verify_checkpoint
from bertkit.training.trainer import epoch_order
from test_training import _collate, _Data, tiny_model  # the loop tests' tiny model and data

CONFIG = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
              max_position_embeddings=32)


def objective():
    from bertkit.training.objectives import PretrainingObjective

    return PretrainingObjective()


def trainer(tmp_path, **kw) -> Trainer:
    args = TrainingArgs(out_dir=tmp_path, batch_size=4, progress=False, **{"max_steps": 6, **kw})
    return Trainer(tiny_model(), _Data(), _collate, objective(), args)


# ---- storage ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   # what torch.save raises on a full disk (safetensors raises its own error type)
                                   RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed "
                                                "writing file data/0: file write failed, No space left on device\nmore")])
def test_a_save_that_runs_out_of_space_keeps_the_previous_checkpoint_and_stops_in_one_line(tmp_path, monkeypatch,
                                                                                         error):
    t = trainer(tmp_path, max_steps=6, save_every=2, save_minutes=0)
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # the second checkpoint's optimizer.pt: half written, then the disk is full
            with open(f, "wb") as out:
                out.write(b"\0" * 100)
            raise error
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(checkpointing.torch, "save", failing_save)
    with pytest.raises(UserError) as e:
        t.train()
    message = str(e.value)
    assert len(message.splitlines()) == 1 and "no space left" in message.lower() and "step 4" in message
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-00000002"], "the partial save was not cleaned up"
    assert "step-00000002" in message and verify_checkpoint(root / "step-00000002") is None
    # the run continues from it
    monkeypatch.setattr(checkpointing.torch, "save", real_save)
    t2 = trainer(tmp_path, max_steps=6, save_every=2, save_minutes=0)
    t2.start_or_resume("auto")
    assert t2.state["step"] == 2


def test_final_model_write_failure_is_one_line(tmp_path, monkeypatch):
    t = trainer(tmp_path, max_steps=2, save_minutes=0)
    import bertkit.checkpoint as ckpt

    def no_space(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", no_space, raising=False)
    monkeypatch.setattr("safetensors.torch.save_file", no_space)
    with pytest.raises(UserError, match="No space left on device"):
        t.train()


def _two_checkpoints(tmp_path):
    trainer(tmp_path, max_steps=4, save_every=2, save_minutes=0).train()
    found = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in found] == ["step-00000002", "step-00000004"]
    return found


@pytest.mark.parametrize("damage", ["flip a byte of the weights", "truncate the optimizer", "delete the RNG states",
                                    "garble the manifest"])
def test_a_damaged_checkpoint_is_skipped_for_the_previous_one_with_a_warning(tmp_path, caplog, damage):
    old, new = _two_checkpoints(tmp_path)
    if damage.startswith("flip"):
        data = bytearray((new / "model.safetensors").read_bytes())
        data[len(data) // 2] ^= 0x01
        (new / "model.safetensors").write_bytes(bytes(data))
    elif damage.startswith("truncate"):
        (new / "optimizer.pt").write_bytes((new / "optimizer.pt").read_bytes()[:50])
    elif damage.startswith("delete"):
        (new / "rng.pt").unlink()
    else:
        (new / "manifest.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        assert find_resume_checkpoint("auto", tmp_path) == old
    assert str(new) in caplog.text and "skipping the damaged checkpoint" in caplog.text
    with pytest.raises(UserError, match="damaged"):  # named explicitly, it is not silently replaced
        find_resume_checkpoint(new, tmp_path)
    t = trainer(tmp_path, max_steps=4, save_every=2, save_minutes=0)
    t.start_or_resume("auto")
    assert t.state["step"] == 2


def test_every_checkpoint_damaged_is_an_error(tmp_path):
    for path in _two_checkpoints(tmp_path):
        (path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="every checkpoint"):
        find_resume_checkpoint("auto", tmp_path)


def test_resume_with_nothing_to_resume_says_so(tmp_path, caplog):
    t = trainer(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        t.start_or_resume("auto")
    assert "no checkpoint under" in caplog.text and t.state["step"] == 0


def test_checkpoints_by_default_at_each_evaluation_and_by_wall_time(tmp_path, monkeypatch):
    t = trainer(tmp_path, max_steps=6, eval_every=4, save_minutes=0)
    t.evaluate = lambda m: {"x": 1.0}
    t.train()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000004", "step-00000006"]
    # save_minutes: with a clock that advances 2 minutes a step, a checkpoint every 3 steps at 5 minutes
    out = tmp_path / "timed"
    t = trainer(out, max_steps=7, save_minutes=5, keep_last=10)
    clock = {"t": 0.0}
    monkeypatch.setattr("bertkit.training.trainer.time.perf_counter", lambda: clock.__setitem__("t", clock["t"] + 60)
                        or clock["t"])
    t.train()
    steps = [int(p.name[5:]) for p in list_checkpoints(out / "checkpoints")]
    assert steps[-1] == 7 and len(steps) >= 3 and steps == sorted(set(steps))


# ---- numerics -----------------------------------------------------------------------------------------------------


def test_a_nan_metric_never_becomes_the_best(tmp_path):
    values = iter([float("nan"), 10.0, float("nan"), 5.0])
    t = trainer(tmp_path, max_steps=8, eval_every=2, save_minutes=0)
    t.evaluate = lambda m: {"score": next(values)}
    t.best_metric = "score"
    t.train()
    assert t.state["best"] == {"step": 4, "value": 10.0}


def test_fp16_overflow_steps_are_not_counted_as_bad_steps(tmp_path):
    t = trainer(tmp_path, max_steps=12, max_bad_steps=2, save_minutes=0)
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**126)  # the first steps' scaled gradients overflow
    t.train()  # more than max_bad_steps overflows in a row: still no "non-finite loss" stop
    assert t.state["overflow_steps"] >= 3 and t.state["skipped_steps"] == 0
    assert t.scaler.get_scale() < 2.0**126
    assert all(torch.isfinite(p).all() for p in t.model.parameters())


def test_non_finite_losses_with_a_scaler_are_still_bad_steps(tmp_path):
    t = trainer(tmp_path, max_steps=12, max_bad_steps=2, save_minutes=0)
    t.scaler = torch.amp.GradScaler("cpu")

    class Poisoned:
        def counts(self, b):
            return objective().counts(b)

        def __call__(self, model, b):
            terms, stats = objective()(model, b)
            return {k: v * float("nan") for k, v in terms.items()}, stats

        def report(self, s, c):
            return objective().report(s, c)

    t.objective = Poisoned()
    with pytest.raises(UserError, match="2 steps in a row had a non-finite loss"):
        t.train()


@pytest.mark.parametrize("unpadded", [False, True])
def test_a_fully_padded_row_is_finite_and_the_same_on_sdpa_and_eager(unpadded):
    torch.manual_seed(0)
    model = BertModel(BertConfig(**{**CONFIG, "num_hidden_layers": 2})).eval()
    model.unpadded = unpadded
    ids = torch.randint(5, 50, (3, 7))
    mask = torch.ones_like(ids)
    mask[1] = 0  # no token at all
    mask[2, 4:] = 0
    with torch.no_grad():
        sdpa = model(ids, mask)
        eager = model(ids, mask, output_attentions=True)  # the eager path: it returns the probabilities
        alone = model(ids[[0, 2]], mask[[0, 2]])
    for out in (sdpa, eager):
        assert torch.isfinite(out.last_hidden_state).all() and torch.isfinite(out.pooler_output).all()
    assert all(torch.isfinite(a).all() for a in eager.attentions)
    if not unpadded:  # the unpadded path zeroes padded positions; attentions always run eagerly on padded rows
        torch.testing.assert_close(sdpa.last_hidden_state, eager.last_hidden_state, rtol=0, atol=1e-6)
    # the other rows are what they are without the empty one
    real = mask[[0, 2]].bool()
    torch.testing.assert_close(sdpa.last_hidden_state[[0, 2]][real], alone.last_hidden_state[real], rtol=0, atol=1e-6)
    # and training through such a row gives finite gradients
    model.train()
    model.zero_grad()
    model(ids, mask).last_hidden_state.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_length_grouping_never_leaves_out_the_same_longest_examples():
    n, global_batch = 103, 8  # 7 examples sit out each epoch
    lengths = list(range(n))  # example i has length i: the longest are the highest indices
    full = n // global_batch * global_batch
    left_out = [set(epoch_order(n, 0, e, global_batch, lengths)[full:].tolist()) for e in range(20)]
    assert len({frozenset(s) for s in left_out}) == 20  # a different set each epoch
    every = set().union(*left_out)
    assert len(every) > 60  # over 20 epochs most examples sit out once, not the same 7
    mean_left_out = sum(sum(s) for s in left_out) / (7 * 20)
    assert abs(mean_left_out - (n - 1) / 2) < 12  # not biased to the long ones (all-longest would be 99)
    for e in range(3):  # still a permutation, and batches still grouped by length
        order = epoch_order(n, 0, e, global_batch, lengths)
        assert sorted(order.tolist()) == list(range(n))
        spans = [max(b) - min(b) for b in order[:full].view(-1, global_batch).tolist()]
        assert sum(spans) / len(spans) < 15  # random batches of 8 out of 0..102 would span ~80


def test_a_checkpoint_from_before_manifests_still_resumes(tmp_path):
    old, new = _two_checkpoints(tmp_path)
    (new / "manifest.json").unlink()  # as checkpoints written before manifests were
    assert find_resume_checkpoint("auto", tmp_path) == new
