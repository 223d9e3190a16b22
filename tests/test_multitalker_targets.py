"""Turn targets of the multi-talker transducers: HEAT assignment, turn tokens, <eot> bias."""

from __future__ import annotations

import pytest
import torch

from fairstream.errors import InputDataError
from fairstream.losses.rnnt import rnnt_loss
from fairstream.metrics.multitalker import Segment
from fairstream.multitalker import channel_targets, check_session, eot_delay_bias, heat_assign


def seg(spk: str, start: float, end: float, words: str = "a b", sid: str = "s1") -> Segment:
    return Segment(sid, spk, start, end, words)


def test_heat_puts_a_turn_on_the_first_channel_free_at_its_start() -> None:
    turns = [seg("A", 0.0, 2.0), seg("B", 1.5, 3.0), seg("A", 2.5, 4.0), seg("B", 4.2, 5.0)]
    # B overlaps A -> channel 1; A's second turn starts when channel 0 is free again; B's
    # second turn starts after both have ended -> channel 0 (the first free)
    assert heat_assign(turns) == [0, 1, 0, 0]
    # the order given does not matter, only the times
    assert heat_assign(list(reversed(turns))) == [0, 0, 1, 0]
    # a turn starting exactly when the previous one ends reuses its channel
    assert heat_assign([seg("A", 0.0, 1.0), seg("B", 1.0, 2.0)]) == [0, 0]


def test_more_simultaneous_turns_than_channels_is_named() -> None:
    turns = [seg("A", 0.0, 3.0), seg("B", 1.0, 3.0), seg("C", 2.0, 3.0)]
    with pytest.raises(InputDataError, match=r"session s1: the turn of C at 2.00 s overlaps 2"):
        heat_assign(turns)
    assert heat_assign(turns, channels=3) == [0, 1, 2]


def test_bad_session_references_are_named() -> None:
    with pytest.raises(InputDataError, match="turns of speaker A overlap"):
        check_session([seg("A", 0.0, 2.0), seg("A", 1.0, 3.0)])
    with pytest.raises(InputDataError, match="outside the recording"):
        check_session([seg("A", 0.0, 2.0)], duration=1.5)
    with pytest.raises(InputDataError, match="outside the recording"):
        check_session([seg("A", -0.5, 1.0)])
    check_session([seg("A", 0.0, 2.0), seg("B", 1.0, 3.0), seg("A", 2.0, 3.0)], duration=3.0)


def test_channel_targets_wrap_each_turn_in_turn_tokens() -> None:
    vocab = {"a": 3, "b": 4, "c": 5}

    def encode(text: str) -> list[int]:
        return [vocab[w] for w in text.split()]

    turns = [seg("A", 0.0, 2.0, "a b"), seg("B", 1.5, 3.0, "c"), seg("A", 2.5, 4.0, "b")]
    two = channel_targets(turns, encode, sot_id=1, eot_id=2)
    assert two[0].tokens == (1, 3, 4, 2, 1, 4, 2) and two[0].eot_index == (3, 6)
    assert two[0].eot_end_s == (2.0, 4.0)
    assert two[1].tokens == (1, 5, 2) and two[1].eot_index == (2,)
    one = channel_targets(turns, encode, sot_id=1, eot_id=2, channels=1)
    assert one[0].tokens == (1, 3, 4, 2, 1, 5, 2, 1, 4, 2)
    assert one[0].eot_end_s == (2.0, 3.0, 4.0)


def test_eot_bias_charges_emission_after_the_true_end_only() -> None:
    tgt = channel_targets([seg("A", 0.0, 0.25, "a")], lambda t: [3], 1, 2)[0]
    bias = eot_delay_bias([tgt], frames=6, max_tokens=4, frame_s=0.08, weight=2.0)
    assert bias.shape == (1, 6, 4)
    # frame t ends at (t + 1) * 0.08 s: 0.08, 0.16, 0.24 are on time, 0.32 is 0.07 s late
    expected = [0.0, 0.0, 0.0, -2.0 * 0.07, -2.0 * 0.15, -2.0 * 0.23]
    torch.testing.assert_close(bias[0, :, 2], torch.tensor(expected, dtype=torch.float64))
    assert bias[0, :, [0, 1, 3]].abs().sum() == 0
    assert eot_delay_bias([tgt], 6, 4, 0.08, 0.0).abs().sum() == 0


def test_the_penalty_moves_the_eot_emission_earlier() -> None:
    """With the bias in the lattice, the gradient pushes probability of <eot> towards frames
    before the turn's end: the expected emission frame of <eot> under the posterior falls."""
    torch.manual_seed(0)
    frames, vocab = 12, 4
    tgt = channel_targets([seg("A", 0.0, 0.3, "a")], lambda t: [3], 1, 2)[0]  # <sot> a <eot>
    tokens = torch.tensor([tgt.tokens])
    logits = torch.zeros(1, frames, len(tgt.tokens) + 1, vocab, requires_grad=True)
    bias = eot_delay_bias([tgt], frames, len(tgt.tokens), 0.08, weight=20.0)
    lens, ulens = torch.tensor([frames]), torch.tensor([len(tgt.tokens)])

    def eot_grad(label_bias):
        logits.grad = None
        rnnt_loss(logits, tokens, lens, ulens, label_bias=label_bias).backward()
        # -dL/dlogit of <eot> (id 2) at lattice row u = 2: the posterior mass of emitting it
        return -logits.grad[0, :, 2, 2]

    plain, penalized = eot_grad(None), eot_grad(bias)
    t = torch.arange(frames, dtype=torch.float32)
    mean = lambda g: float((g.clamp_min(0) * t).sum() / g.clamp_min(0).sum())  # noqa: E731
    assert mean(penalized) < mean(plain) - 1.0
