"""Checkpoints: atomic save, weights-only load, clear errors, compatibility, averaging."""

from __future__ import annotations

import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

from fairstream.checkpoint import (
    average_checkpoints,
    capture_rng_state,
    check_compatible,
    config_differences,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from fairstream.errors import CheckpointError

CONFIG = {"model": {"encoder": {"name": "lstm", "kwargs": {"hidden": 8}}, "vocab_size": 5},
          "tokenizer": {"kind": "char"}, "optim": {"lr": 0.001}}


def _state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), value), "b": torch.full((3,), -value),
            "count": torch.tensor(int(value), dtype=torch.int64)}


def test_round_trip_keeps_every_part(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    rng = capture_rng_state()
    path = save_checkpoint(
        tmp_path / "c.pt", config=CONFIG, model=model.state_dict(), optimizer=opt.state_dict(),
        progress={"step": 7, "epoch": 1}, rng=rng, hooks={"EwcHook": {"lam": 0.5}},
        extra={"cmvn_mean": torch.zeros(80), "tokenizer_kind": "char"},
    )
    ck = load_checkpoint(path)
    assert ck.config == CONFIG and ck.step == 7
    assert torch.equal(ck.model["weight"], model.weight.detach())
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(ck.optimizer)
    assert ck.hooks == {"EwcHook": {"lam": 0.5}}
    assert ck.extra["tokenizer_kind"] == "char"
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_rng_state_round_trip_reproduces_draws(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    save_checkpoint(tmp_path / "r.pt", config={}, model={}, rng=capture_rng_state())
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(10), random.random(), np.random.rand(5)  # move every generator on
    restore_rng_state(load_checkpoint(tmp_path / "r.pt").rng)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "corrupt"),
        (b"not a zip file at all" * 10, "corrupt"),
        (None, "corrupt"),  # a real checkpoint cut short
    ],
)
def test_corrupt_files_raise_checkpoint_error_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if content is None:
        save_checkpoint(path, config=CONFIG, model=_state(1.0))
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


class _Evil:
    def __reduce__(self):  # would run code on a plain pickle load
        return (os.system, ("echo pwned",))


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "fairstream-checkpoint", "version": 1, "obj": _Evil()}, path)
    with pytest.raises(CheckpointError, match="not a safe fairstream checkpoint"):
        load_checkpoint(path)


def test_other_files_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="no format marker"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with open(tmp_path / "pickle.pt", "wb") as fh:
        pickle.dump({"a": 1}, fh)
    with pytest.raises(CheckpointError, match="pickle.pt"):
        load_checkpoint(tmp_path / "pickle.pt")


def test_config_mismatch_names_each_differing_key():
    other = {**CONFIG, "model": {"encoder": {"name": "lstm", "kwargs": {"hidden": 16}},
                                 "vocab_size": 9}}
    with pytest.raises(CheckpointError) as info:
        check_compatible(CONFIG, other, source="exp/final.pt")
    msg = str(info.value)
    assert "exp/final.pt" in msg
    assert "model.encoder.kwargs.hidden: 8 in checkpoint vs 16 in config" in msg
    assert "model.vocab_size: 5 in checkpoint vs 9 in config" in msg
    # other sections may change (e.g. the learning rate when resuming)
    check_compatible(CONFIG, {**CONFIG, "optim": {"lr": 1.0}})
    assert config_differences(CONFIG, {**CONFIG, "optim": {"lr": 1.0}}) == [
        ("optim.lr", 0.001, 1.0)
    ]


def test_average_of_checkpoints_is_the_mean(tmp_path):
    paths = [save_checkpoint(tmp_path / f"step-{i:08d}.pt", config=CONFIG, model=_state(v))
             for i, v in enumerate([1.0, 2.0, 6.0])]
    avg = average_checkpoints(paths)
    assert torch.equal(avg["w"], torch.full((2, 3), 3.0))
    assert torch.equal(avg["b"], torch.full((3,), -3.0))
    assert avg["count"].dtype == torch.int64 and int(avg["count"]) == 6  # ints: the last one
    assert list_checkpoints(tmp_path) == paths


def test_average_refuses_mismatched_models(tmp_path):
    a = save_checkpoint(tmp_path / "a.pt", config=CONFIG, model=_state(1.0))
    b = save_checkpoint(tmp_path / "b.pt", config=CONFIG, model={"w": torch.zeros(3, 3),
                                                               "b": torch.zeros(3),
                                                               "count": torch.tensor(0)})
    with pytest.raises(CheckpointError, match=r"b\.pt: w has shape \(3, 3\)"):
        average_checkpoints([a, b])
    other = {**CONFIG, "model": {**CONFIG["model"], "vocab_size": 6}}
    c = save_checkpoint(tmp_path / "c.pt", config=other, model=_state(1.0))
    with pytest.raises(CheckpointError, match="model.vocab_size"):
        average_checkpoints([a, c])
    with pytest.raises(CheckpointError, match="at least one"):
        average_checkpoints([])


def test_kind_is_one_field_for_every_model(tmp_path):
    save_checkpoint(tmp_path / "t.pt", config={}, model={}, kind="transducer")
    assert load_checkpoint(tmp_path / "t.pt").kind == "transducer"
    # writers that go through the training loop say it in `extra`; it is stored as the kind
    save_checkpoint(tmp_path / "s.pt", config={}, model={}, extra={"kind": "speaker", "x": 1})
    ck = load_checkpoint(tmp_path / "s.pt")
    assert ck.kind == "speaker" and ck.extra == {"x": 1}
    save_checkpoint(tmp_path / "g.pt", config={}, model={})
    assert load_checkpoint(tmp_path / "g.pt").kind is None
    with pytest.raises(CheckpointError, match="unknown checkpoint kind 'vocoder'"):
        save_checkpoint(tmp_path / "v.pt", config={}, model={}, kind="vocoder")


def test_kind_of_files_written_before_the_field_existed(tmp_path):
    def old_file(name, config, extra):  # the 0.1 payload: no "kind"
        payload = {"format": "fairstream-checkpoint", "version": 1, "config": json.dumps(config),
                   "model": {}, "extra": extra}
        torch.save(payload, tmp_path / name)
        return tmp_path / name

    assert load_checkpoint(old_file("a.pt", {}, {"task": "transducer"})).kind == "transducer"
    assert load_checkpoint(old_file("b.pt", {"kind": "speaker"}, {})).kind == "speaker"
    newer = {"format": "fairstream-checkpoint", "version": 1, "kind": "vocoder", "config": "{}",
             "model": {}}
    torch.save(newer, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="c.pt holds a model of kind 'vocoder'"):
        load_checkpoint(tmp_path / "c.pt")
