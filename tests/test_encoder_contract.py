"""Every registered encoder keeps the encoder contract (models/encoders/base.py).

The checks run over the registry, so a new encoder is held to them as soon as it registers:
it must add a small configuration to ``SMALL`` below, or
:func:`test_every_encoder_has_a_small_config` fails. For each encoder:

* streaming parity: chunks of 1, 3 and 7 units and an irregular chunking (a unit is the
  encoder's ``chunk_frames_multiple``), ended by a ``final`` call, concatenate to the full pass;
* streams of one batch advance independently (different amounts of audio per call);
* ``stack_states`` / ``select_state``: two streams batched mid-way give what each gives alone;
* a state from another encoder, or of another batch size, is refused with a named error.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from fairstream.errors import InputDataError
from fairstream.models.encoders import ENCODERS

TOL = 1e-5
FEATS = 40

#: Small options per registered encoder name (the fields of its options class).
SMALL: dict[str, dict[str, object]] = {
    "lstm": {"conv_channels": 8, "num_layers": 2, "hidden_dim": 32, "output_dim": 24},
    "conformer": {"subsampling": 4, "conv_channels": 8, "d_model": 32, "num_heads": 2,
                  "ffn_dim": 48, "num_layers": 2, "conv_kernel": 5, "chunk_size": 3,
                  "left_chunks": 2, "lookahead": 2, "output_dim": 24},
    "convrnnt": {"local_channels": 4, "global_dim": 16, "global_blocks": 3, "se_dim": 4,
                 "num_layers": 2, "hidden_dim": 32, "output_dim": 24},
    "contextnet": {"channels": 16, "num_blocks": 4, "layers_per_block": 2, "se_reduction": 4,
                   "output_dim": 24},
    "transformer": {"conv_channels": 8, "d_model": 32, "num_heads": 2, "ffn_dim": 48,
                    "num_layers": 2, "left_context": 5, "output_dim": 24, "gated": True},
}


def _build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ENCODERS[name](FEATS, **SMALL[name]).eval()


def _full(enc: nn.Module, x: Tensor, x_lens: Tensor) -> list[Tensor]:
    out = enc(x, x_lens)
    return [out.y[b, : int(out.y_lens[b])] for b in range(x.shape[0])]


def _stream(enc: nn.Module, x: Tensor, x_lens: Tensor, sizes: Sequence[int],
            state: object = None) -> list[Tensor]:
    """Feed ``x`` in chunks of ``sizes`` (cycled), then a final call; outputs per item."""
    outs: list[list[Tensor]] = [[] for _ in range(x.shape[0])]
    start, i = 0, 0
    while start < x.shape[1]:
        size = sizes[i % len(sizes)]
        chunk = x[:, start : start + size]
        lens = (x_lens - start).clamp(0, chunk.shape[1])
        y, y_lens, state = enc.stream(chunk, lens, state)
        for b in range(x.shape[0]):
            outs[b].append(y[b, : int(y_lens[b])])
        start, i = start + size, i + 1
    empty = x.new_zeros(x.shape[0], 0, x.shape[2])
    y, y_lens, state = enc.stream(empty, torch.zeros_like(x_lens), state, final=True)
    for b in range(x.shape[0]):
        outs[b].append(y[b, : int(y_lens[b])])
    return [torch.cat(o) for o in outs]


def _names() -> list[str]:
    return sorted(ENCODERS)


def test_every_encoder_has_a_small_config() -> None:
    missing = sorted(set(ENCODERS) - set(SMALL))
    assert not missing, f"add a small configuration to SMALL for {missing}"


@pytest.mark.parametrize("name", _names())
@pytest.mark.parametrize("units", [[1], [3], [7], [5, 1, 16, 2, 11, 0, 9]],
                         ids=["1", "3", "7", "irregular"])
def test_streaming_equals_the_full_pass(name: str, units: list[int]) -> None:
    enc = _build(name, seed=1)
    mult = int(enc.chunk_frames_multiple)
    sizes = [max(u * mult, enc.chunk_frames_min) if u else 0 for u in units]
    torch.manual_seed(2)
    x = torch.randn(2, 8 * mult + 61, FEATS)
    x_lens = torch.tensor([x.shape[1], x.shape[1] - 23])
    with torch.no_grad():
        full = _full(enc, x, x_lens)
        streamed = _stream(enc, x, x_lens, sizes)
    for b in range(2):
        assert streamed[b].shape == full[b].shape, (name, b)
        torch.testing.assert_close(streamed[b], full[b], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("name", _names())
def test_streams_of_one_batch_advance_independently(name: str) -> None:
    enc = _build(name, seed=3)
    mult = int(enc.chunk_frames_multiple)
    torch.manual_seed(4)
    steps = [(3, 0), (5, 7), (0, 1), (22, 13), (0, 9)]
    total = [sum(s[b] for s in steps) * mult for b in range(2)]
    xs = [torch.randn(n, FEATS) for n in total]
    with torch.no_grad():
        alone = [_full(enc, x[None], torch.tensor([x.shape[0]]))[0] for x in xs]
        state = None
        outs: list[list[Tensor]] = [[], []]
        pos = [0, 0]
        for units in steps:
            sizes = [u * mult for u in units]
            chunk = torch.zeros(2, max(sizes), FEATS)
            for b in range(2):
                chunk[b, : sizes[b]] = xs[b][pos[b] : pos[b] + sizes[b]]
                pos[b] += sizes[b]
            y, y_lens, state = enc.stream(chunk, torch.tensor(sizes), state)
            for b in range(2):
                outs[b].append(y[b, : int(y_lens[b])])
        y, y_lens, state = enc.stream(torch.zeros(2, 0, FEATS), torch.tensor([0, 0]), state,
                                      final=True)
        for b in range(2):
            outs[b].append(y[b, : int(y_lens[b])])
    assert pos == total
    for b in range(2):
        torch.testing.assert_close(torch.cat(outs[b]), alone[b], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("name", _names())
def test_streams_join_a_batch_and_leave_it(name: str) -> None:
    enc = _build(name, seed=5)
    mult = int(enc.chunk_frames_multiple)
    torch.manual_seed(6)
    xs = [torch.randn(41 * mult, FEATS), torch.randn(26 * mult, FEATS)]
    with torch.no_grad():
        alone = [_full(enc, x[None], torch.tensor([x.shape[0]]))[0] for x in xs]
        pos = [9 * mult, 3 * mult]
        outs: list[list[Tensor]] = []
        states = []
        for x, n in zip(xs, pos):
            y, y_lens, st = enc.stream(x[None, :n], torch.tensor([n]))
            outs.append([y[0, : int(y_lens[0])]])
            states.append(st)
        state = enc.stack_states(states)
        for units in [(4, 7), (0, 5), (11, 1)]:
            sizes = [u * mult for u in units]
            chunk = torch.zeros(2, max(sizes), FEATS)
            for i, n in enumerate(sizes):
                chunk[i, :n] = xs[i][pos[i] : pos[i] + n]
                pos[i] += n
            y, y_lens, state = enc.stream(chunk, torch.tensor(sizes), state)
            for i in range(2):
                outs[i].append(y[i, : int(y_lens[i])])
        parted = enc.select_state(state, torch.tensor([1, 0]))
        for i, row in ((0, 1), (1, 0)):
            st = enc.select_state(parted, torch.tensor([row]))
            rest = xs[i][pos[i] :]
            y, y_lens, _ = enc.stream(rest[None], torch.tensor([rest.shape[0]]), st,
                                      final=True)
            outs[i].append(y[0, : int(y_lens[0])])
    for i in range(2):
        torch.testing.assert_close(torch.cat(outs[i]), alone[i], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("name", _names())
def test_a_state_of_another_batch_size_is_refused(name: str) -> None:
    enc = _build(name)
    state = enc.init_state(3)
    x = torch.zeros(2, enc.chunk_frames_multiple, FEATS)
    with pytest.raises(InputDataError, match="batch|stream"):
        enc.stream(x, torch.tensor([x.shape[1]] * 2), state)


@pytest.mark.parametrize(("name", "other"),
                         [(a, b) for a in _names() for b in _names() if a != b])
def test_a_state_of_another_encoder_is_refused(name: str, other: str) -> None:
    enc, foreign = _build(name), _build(other)
    state = foreign.init_state(1)
    x = torch.zeros(1, enc.chunk_frames_multiple, FEATS)
    with pytest.raises(InputDataError, match=type(state).__name__):
        enc.stream(x, torch.tensor([x.shape[1]]), state)
