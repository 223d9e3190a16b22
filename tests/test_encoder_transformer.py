"""The streaming Transformer encoder and its arbitrators (compute-amortized gating)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fairstream.errors import InputDataError
from fairstream.models.encoders.transformer import TransformerEncoder

FEATS = 40
SMALL = {"conv_channels": 8, "d_model": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 3,
         "left_context": 4, "output_dim": 24}


def _gated(seed: int = 0, **kw) -> TransformerEncoder:
    torch.manual_seed(seed)
    enc = TransformerEncoder(FEATS, **{**SMALL, "gated": True, **kw})
    with torch.no_grad():  # random arbitrators: about half the gates on
        for block in enc.blocks:
            last = block.arbitrator[2]
            last.weight.normal_(0.0, 2.0)
            last.bias.zero_()
    return enc.eval()


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 57, FEATS, generator=g), torch.tensor([57, 40, 23])


def test_real_skipping_equals_the_dense_computation_with_hard_gates() -> None:
    enc = _gated()
    x, lens = _inputs()
    with torch.no_grad():
        sparse = enc(x, lens)
        enc.sparse_inference = False
        dense = enc(x, lens)
    rate = sparse.stats["att_rate"], sparse.stats["ffn_rate"]
    assert 0.1 < rate[0] < 0.9 and 0.1 < rate[1] < 0.9  # the gates do skip
    for b in range(3):
        n = int(sparse.y_lens[b])
        torch.testing.assert_close(sparse.y[b, :n], dense.y[b, :n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_streaming_with_skipping_equals_the_full_pass(chunk: int) -> None:
    enc = _gated(seed=2)
    x, lens = _inputs(3)
    with torch.no_grad():
        full = enc(x, lens)
        state, outs = None, [[] for _ in range(3)]
        for start in range(0, x.shape[1], chunk):
            part = x[:, start:start + chunk]
            n = (lens - start).clamp(0, part.shape[1])
            y, y_lens, state = enc.stream(part, n, state)
            for b in range(3):
                outs[b].append(y[b, : int(y_lens[b])])
    for b in range(3):
        torch.testing.assert_close(torch.cat(outs[b]), full.y[b, : int(full.y_lens[b])],
                                   atol=1e-5, rtol=1e-5)


def test_attention_sees_only_its_left_context() -> None:
    torch.manual_seed(0)
    enc = TransformerEncoder(FEATS, **SMALL).eval()
    x, lens = _inputs()
    x2 = x.clone()
    x2[:, :4] += 5.0  # change the first 4 feature frames (the first encoder frame)
    with torch.no_grad():
        y1, y2 = enc(x, lens).y, enc(x2, lens).y
    # frame 0 reaches at most num_layers x left_context encoder frames ahead (+ the front
    # end's receptive field of a few frames)
    reach = SMALL["num_layers"] * SMALL["left_context"] + 2
    assert not torch.allclose(y1[0, 1], y2[0, 1])
    torch.testing.assert_close(y1[0, reach + 1:], y2[0, reach + 1:])


def test_compute_loss_forms_and_gradient_reaches_the_arbitrators() -> None:
    x, lens = _inputs()
    enc = _gated(compute_weight=0.5).train()
    out = enc(x, lens)
    share = out.stats["compute_share"]
    assert 0.0 < share < 1.0
    torch.testing.assert_close(out.aux_losses["compute"].detach(), torch.tensor(0.5 * share))
    out.aux_losses["compute"].backward()
    grads = [b.arbitrator[0].weight.grad for b in enc.blocks]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    target = _gated(compute_weight=2.0, target_share=0.4).train()
    o = target(x, lens)
    torch.testing.assert_close(o.aux_losses["compute"].detach(),
                               torch.tensor(2.0 * (o.stats["compute_share"] - 0.4) ** 2))
    # the task loss reaches the arbitrators through the straight-through gates
    enc.zero_grad()
    enc(x, lens).y.sum().backward()
    assert enc.blocks[0].arbitrator[0].weight.grad.abs().sum() > 0


def test_ungated_has_no_compute_terms_and_skipping_saves_flops() -> None:
    torch.manual_seed(0)
    plain = TransformerEncoder(FEATS, **SMALL).eval()
    x, lens = _inputs()
    out = plain(x, lens)
    assert not out.aux_losses and not out.stats
    enc = _gated()

    def flops(model: TransformerEncoder) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, lens)
        return int(counter.get_total_flops())

    some = flops(enc)
    with torch.no_grad():
        for block in enc.blocks:
            block.arbitrator[2].weight.zero_()
            block.arbitrator[2].bias.fill_(-5.0)  # every gate off
    none = flops(enc)
    with torch.no_grad():
        for block in enc.blocks:
            block.arbitrator[2].bias.fill_(5.0)  # every gate on
    every = flops(enc)
    assert none < some < every
    assert enc(x, lens).stats["compute_share_hard"] == pytest.approx(1.0)


def test_bad_options_are_named() -> None:
    with pytest.raises(InputDataError, match="multiple of num_heads"):
        TransformerEncoder(FEATS, d_model=30, num_heads=4)
    with pytest.raises(InputDataError, match="target_share"):
        TransformerEncoder(FEATS, target_share=1.5)


def test_speed_benchmark_forces_the_gate_rates_it_asks_for(tmp_path) -> None:
    import importlib.util
    import json
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "amortized_speed.py"
    spec = importlib.util.spec_from_file_location("bench_amortized_speed", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_amortized_speed"] = mod
    spec.loader.exec_module(mod)
    out = tmp_path / "speed.json"
    assert mod.main(["--rates", "1,0.5,0", "--batch", "2", "--seconds", "1", "--runs", "1",
                     "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["rate"] for r in rows] == [None, 1.0, 0.5, 0.0]
    for r in rows[1:]:
        assert abs(r["measured_rate"] - r["rate"]) < 0.05
    flops = [r["flops_ratio"] for r in rows[1:]]
    assert flops[0] > flops[1] > flops[2]  # fewer gates on, fewer FLOPs


def test_counted_flops_of_skipping_match_the_flop_counter() -> None:
    """The per-frame costs the compute share is made of (``frame_flops``) against
    ``torch.utils.flop_counter`` on the real, sparse inference pass of one utterance."""
    enc = _gated()
    x = torch.randn(1, 57, FEATS, generator=torch.Generator().manual_seed(4))
    lens = torch.tensor([57])

    def flops() -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            enc(x, lens)
        return int(counter.get_total_flops())

    tally = enc.start_gate_tally()
    some = flops()
    enc.gate_tally = None  # count the first pass only
    with torch.no_grad():
        for block in enc.blocks:
            block.arbitrator[2].weight.zero_()
            block.arbitrator[2].bias.fill_(5.0)  # every gate on
    every = flops()
    f = enc.frame_flops()
    layers, frames = len(enc.blocks), tally.frames[0]
    off_att = layers * frames - sum(o[0] for o in tally.on)
    off_ffn = layers * frames - sum(o[1] for o in tally.on)
    assert 0 < off_att < layers * frames and 0 < off_ffn < layers * frames
    # a layer none of whose frames runs attention skips the scores too (the tally, counting
    # them for every frame, is an upper bound there)
    idle = sum(1 for o in tally.on if o[0] == 0)
    assert every - some == off_att * f["att"] + off_ffn * f["ffn"] + idle * frames * f["core"]
    plain = TransformerEncoder(FEATS, **SMALL).eval()
    plain.load_state_dict({k: v for k, v in enc.state_dict().items() if "arbitrator" not in k})
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        plain(x, lens)
    assert every - int(counter.get_total_flops()) == layers * frames * f["arb"]
    dense = layers * frames * (f["kv"] + f["core"] + f["att"] + f["ffn"])
    expected = (dense + layers * frames * f["arb"] - off_att * f["att"]
                - off_ffn * f["ffn"]) / dense
    assert tally.compute_share() == pytest.approx(expected)
