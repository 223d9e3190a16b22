"""Fuzzing ``fairstream.checkpoint.load_checkpoint`` with random bytes, cut or altered
checkpoints, tampered payloads and files of other programs (pickles of arbitrary objects)."""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from _fuzz import FUZZ, nasty_text, read_written, scratch_dir
from hypothesis import given
from hypothesis import strategies as st

from fairstream.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fairstream.errors import CheckpointError


class Foreign:
    """An object of another program: pickled by reference, so a safe load refuses it."""


def _valid() -> bytes:
    with scratch_dir() as d:
        path = save_checkpoint(d / "ok.pt", config={"model": {"d": 4}},
                               model={"w": torch.ones(2, 2)}, progress={"step": 3},
                               extra={"kind": "transducer"})
        return path.read_bytes()


VALID = _valid()
keys = st.one_of(st.sampled_from(["step", "epoch"]), nasty_text, st.integers())
plain = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), nasty_text,
              st.builds(torch.zeros, st.integers(0, 3))),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(keys, inner, max_size=3)),
    max_leaves=6)
FIELDS = ("format", "version", "kind", "config", "model", "optimizer", "progress", "rng",
          "hooks", "extra")


def _saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@st.composite
def tampered(draw: st.DrawFn) -> bytes:
    """A valid payload with some entries replaced by arbitrary plain data or dropped."""
    payload: dict[Any, Any] = torch.load(io.BytesIO(VALID), weights_only=True)  # Any: payload
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            payload[key] = draw(plain)
        else:
            payload.pop(key, None)
    return _saved(payload)


foreign = st.sampled_from([
    lambda: _saved({"format": "fairstream-checkpoint", "version": 1, "x": Foreign()}),
    lambda: _saved({"weights": np.zeros(3)}),
    lambda: _saved(OrderedDict(w=torch.zeros(1))),
    lambda: pickle.dumps({"a": 1}),
    lambda: pickle.dumps(Foreign()),
]).map(lambda make: make())

checkpoint_bytes = st.one_of(
    st.binary(max_size=300),
    st.integers(0, len(VALID)).map(lambda n: VALID[:n]),
    st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)).map(
        lambda p: VALID[:p[0]] + bytes([p[1]]) + VALID[p[0] + 1:]),
    tampered(), foreign, st.just(VALID))


@FUZZ
@given(checkpoint_bytes)
def test_checkpoints_load_or_say_what_the_file_is_not(content: bytes) -> None:
    ck = read_written(load_checkpoint, "model.pt", content)
    if ck is None:
        return
    assert isinstance(ck, Checkpoint)
    assert isinstance(ck.config, dict) and isinstance(ck.progress, dict)
    assert isinstance(ck.hooks, dict) and isinstance(ck.extra, dict)
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ck.model.items())
    assert ck.optimizer is None or isinstance(ck.optimizer, dict)
    assert ck.rng is None or isinstance(ck.rng, dict)
    ck.step  # noqa: B018 - the property must work


@FUZZ
@given(foreign)
def test_foreign_files_get_no_advice_to_load_unsafely(content: bytes) -> None:
    with scratch_dir() as d:
        (d / "other.pt").write_bytes(content)
        try:
            load_checkpoint(d / "other.pt")
        except CheckpointError as exc:
            msg = str(exc)
        else:
            raise AssertionError("a foreign file loaded")
    assert "weights_only" not in msg and "\x1b[" not in msg, msg
    assert "other.pt" in msg and "not" in msg and "fairstream" in msg
