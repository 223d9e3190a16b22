"""Streaming Transformer encoder with optional compute-amortizing arbitrators (AmNets).

Causal conv subsampling, then ``num_layers`` pre-norm Transformer blocks whose self-attention
is **frame-causal with a limited left context**: encoder frame ``t`` attends to frames
``t - left_context .. t`` (a sliding window, with a learned bias per head and offset as the
position information). Streaming keeps the keys and values of the last ``left_context``
frames of every layer as state, so any chunking gives the full pass's frames exactly.

**Arbitrators** (``gated=True``; Xie et al., Interspeech 2022; Macoskey et al., 2021): per
block, a tiny network on the block's input frame (``Linear(d, arbitrator_dim) → ReLU →
Linear(arbitrator_dim, 2)``) gives two gates per frame, one for the attention sub-block and
one for the feed-forward sub-block. A gate that is off makes its sub-block the identity for
that frame (the residual passes through). Training uses **straight-through hard gates**: the
forward pass uses ``g = 1[p > 0.5]`` with ``p = σ(logit + noise)`` (``noise``: logistic,
scaled by ``gate_noise``, in training only; the Gumbel-sigmoid trick) and the backward pass
the gradient of ``p``. Inference uses ``g = 1[logit > 0]``.

**Compute loss** (an auxiliary loss of :class:`EncoderOutput`): the expected share of the
gateable FLOPs executed, ``share = Σ_l (p̄_att,l · C_att + p̄_ffn,l · C_ffn) / Σ_l (C_att +
C_ffn)`` with ``p̄`` the mean gate probability over valid frames and ``C`` the per-frame FLOPs
of each sub-block (attention: the query and output projections; feed-forward: both layers).
The loss is ``compute_weight · share``, or with ``target_share >= 0`` the target-rate form
``compute_weight · (share − target_share)²``. The keys and values of every frame are always
computed (other frames attend to them), and so are the attention scores and weighted sums
of the banded kernel (a skipped frame's query is zeros), so their cost is outside the
gateable share; the statistics report both.

**Attention kernel**: banded (:func:`_banded_attention`): blocks of ``S = min(W, T)``
queries against the ``S + W − 1`` keys they reach, one batched product per block, instead of
a copied window per query. Its score cost per frame is ``4 (S + W − 1) d`` FLOPs:
``4 (2W − 1) d`` offline (what :meth:`TransformerEncoder.frame_flops` counts, ``core``),
less when a streaming chunk has fewer than W frames.

**Real skipping at inference** (``eval()`` mode, gated): the feed-forward runs only on the
frames whose gate is on (gather, compute, scatter); the query and output projections run
only for the frames whose attention gate is on (a layer where none is on skips the scores
too). The result equals the dense computation with hard gates (a test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairstream.errors import InputDataError
from fairstream.models.encoders import register_encoder
from fairstream.models.encoders.base import EncoderOutput
from fairstream.models.encoders.common import (
    EncoderModule,
    build_options,
    check_input,
    check_options,
    flatten_freq,
    subsampling_convs,
    subsampling_full,
    subsampling_state,
    subsampling_stream,
    take_frames,
)
from fairstream.models.state import EncoderState

__all__ = [
    "GateTally",
    "TransformerEncoder",
    "TransformerEncoderOptions",
    "TransformerEncoderState",
]


@dataclass(frozen=True)
class TransformerEncoderOptions:
    """Options of :class:`TransformerEncoder` (``model.encoder.kwargs`` of ``transformer``).

    Attributes:
        subsampling: time subsampling of the conv front end (2, 4 or 8).
        conv_channels: channels of the front end.
        d_model: model width.
        num_heads: attention heads (``d_model`` must be a multiple).
        ffn_dim: feed-forward hidden size.
        num_layers: blocks.
        left_context: encoder frames before the current one that attention sees.
        output_dim: encoder output size.
        dropout: dropout in the residual branches during training.
        gated: add the arbitrators (per block, a gate per frame for each sub-block).
        arbitrator_dim: hidden size of an arbitrator.
        compute_weight: λ of the compute loss (0: none).
        target_share: ``< 0``: the loss is ``λ · share``; otherwise ``λ · (share − target)²``.
        gate_noise: scale of the logistic noise on the gate logits in training.
        arbitrator_gain: the gate logits are this times the arbitrator's output. With Adam
            (steps of about the learning rate per parameter whatever the gradient's size) a
            gain of g moves the gates g times faster than the rest of the network: a
            learning-rate multiplier for the arbitrators without a second parameter group,
            so that fine-tuning a dense model at a small learning rate can still turn gates
            off within a few hundred steps.
    """

    subsampling: int = 4
    conv_channels: int = 32
    d_model: int = 144
    num_heads: int = 4
    ffn_dim: int = 576
    num_layers: int = 6
    left_context: int = 32
    output_dim: int = 256
    dropout: float = 0.1
    gated: bool = False
    arbitrator_dim: int = 16
    compute_weight: float = 0.0
    target_share: float = -1.0
    gate_noise: float = 1.0
    arbitrator_gain: float = 10.0

    def __post_init__(self) -> None:
        check_options(self)
        if self.d_model % self.num_heads:
            raise InputDataError(f"d_model {self.d_model} is not a multiple of num_heads "
                                 f"{self.num_heads}")
        if self.left_context < 0:
            raise InputDataError(f"left_context must be >= 0, got {self.left_context}")
        if self.target_share > 1.0:
            raise InputDataError(f"target_share must be <= 1, got {self.target_share}")
        if self.compute_weight < 0 or self.gate_noise < 0:
            raise InputDataError("compute_weight and gate_noise must be >= 0")
        if self.arbitrator_gain <= 0:
            raise InputDataError(f"arbitrator_gain must be > 0, got {self.arbitrator_gain}")


_D = TransformerEncoderOptions()


@dataclass(frozen=True)
class TransformerEncoderState(EncoderState):
    """Streaming state of :class:`TransformerEncoder`.

    Attributes:
        conv_buffers, conv_buffer_lens: the front end's buffers (see the LSTM encoder).
        keys, values: one ``(B, left_context, H, E)`` tensor per layer: the last frames'
            keys and values (the most recent last; frames before the stream's start are
            zeros and masked by ``frames_out``).
        frames_in: ``(B,)`` feature frames consumed.
        frames_out: ``(B,)`` encoder frames emitted.
    """

    conv_buffers: tuple[Tensor, ...]
    conv_buffer_lens: tuple[Tensor, ...]
    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    frames_in: Tensor
    frames_out: Tensor

    @staticmethod
    def stack(states: Sequence[TransformerEncoderState]) -> TransformerEncoderState:
        """One state holding the streams of ``states`` in order.

        Raises:
            InputDataError: on no states or states of differently shaped encoders.
        """
        if not states:
            raise InputDataError("stack of no encoder states")
        shapes = {(len(s.keys), tuple(s.keys[0].shape[1:]) if s.keys else ()) for s in states}
        if len(shapes) > 1:
            raise InputDataError(f"cannot stack states of differently shaped encoders: "
                                 f"(layers, key cache shape) {sorted(shapes)}")
        return TransformerEncoderState.concat(states, padded=("conv_buffers",))


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, window: int, dropout: float,
                 gated: bool, arb_dim: int, gain: float = 1.0) -> None:
        super().__init__()
        self.heads, self.e, self.window = heads, d // heads, window
        self.ln_att = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.o = nn.Linear(d, d)
        self.pos_bias = nn.Parameter(torch.zeros(heads, window))
        self.ln_ffn = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn, d))
        self.drop = nn.Dropout(dropout)
        self.gain = gain
        self.arbitrator = (nn.Sequential(nn.Linear(d, arb_dim), nn.ReLU(),
                                         nn.Linear(arb_dim, 2)) if gated else None)
        if self.arbitrator is not None:
            last = self.arbitrator[2]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias, 2.0 / gain)  # every sub-block on (p ≈ 0.88)

    def key_values(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, d) normalized inputs -> keys, values (B, T, H, E)."""
        k, v = self.kv(h).chunk(2, dim=-1)
        shape = (*h.shape[:-1], self.heads, self.e)
        return k.reshape(shape), v.reshape(shape)

    def queries(self, h: Tensor) -> Tensor:
        """(N, d) normalized inputs -> queries (N, H, E)."""
        q: Tensor = self.q(h)
        return q.reshape(h.shape[0], self.heads, self.e)

    def gates(self, x: Tensor, noise: float) -> tuple[Tensor, Tensor, Tensor]:
        """Gates (hard; straight-through in training), their probabilities, and the
        noise-free hard decisions inference would take, (..., 2) each."""
        assert self.arbitrator is not None
        logits = self.gain * self.arbitrator(x)
        decisions = (logits > 0).to(logits.dtype)
        if self.training:
            if noise > 0:
                u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
                logits = logits + noise * (torch.log(u) - torch.log1p(-u))
            p = torch.sigmoid(logits)
            hard = (p > 0.5).to(p.dtype)
            return hard + p - p.detach(), p, decisions
        return decisions, torch.sigmoid(logits), decisions


class GateTally:
    """Counts of the gate decisions of eval-mode passes (see
    :meth:`TransformerEncoder.start_gate_tally`): per layer, the valid frames and those
    whose attention / feed-forward ran.

    Attributes:
        frames: (L,) valid frames seen per layer.
        on: (L, 2) frames whose attention (column 0) / feed-forward (column 1) ran.
    """

    def __init__(self, layers: int, flops: dict[str, int]) -> None:
        self.frames = [0] * layers
        self.on = [[0, 0] for _ in range(layers)]
        self.flops = dict(flops)

    def add(self, layer: int, decisions: Tensor, frame_valid: Tensor) -> None:
        """Add one pass of ``layer``: ``decisions`` (B, T, 2), ``frame_valid`` (B, T)."""
        m = frame_valid.unsqueeze(-1)
        self.frames[layer] += int(frame_valid.sum())
        counts = ((decisions > 0) & m).sum(dim=(0, 1))
        self.on[layer][0] += int(counts[0])
        self.on[layer][1] += int(counts[1])

    def compute_share(self) -> float:
        """Encoder-block FLOPs run (keys/values, attention scores and arbitrators of every
        frame, the projections whose gate was on) over the same blocks without gates."""
        f = self.flops
        frames = sum(self.frames)
        if not frames:
            return float("nan")
        run = (frames * (f["kv"] + f["core"] + f["arb"]) + sum(o[0] for o in self.on) * f["att"]
               + sum(o[1] for o in self.on) * f["ffn"])
        return run / (frames * (f["kv"] + f["core"] + f["att"] + f["ffn"]))

    def rates(self) -> tuple[float, float]:
        """Share of frames whose attention / feed-forward ran, over all layers."""
        frames = max(sum(self.frames), 1)
        return (sum(o[0] for o in self.on) / frames, sum(o[1] for o in self.on) / frames)

    def describe(self) -> str:
        """One line for people, e.g. ``gates: 41.2 % of the encoder-block compute ran
        (attention on 55.0 % of frames, feed-forward on 30.1 %; by layer ...)``."""
        att, ffn = self.rates()
        layers = ", ".join(f"{100 * o[0] / max(n, 1):.0f}/{100 * o[1] / max(n, 1):.0f}"
                           for o, n in zip(self.on, self.frames, strict=True))
        return (f"gates: {100 * self.compute_share():.1f} % of the encoder-block compute ran "
                f"(attention on {100 * att:.1f} % of frames, feed-forward on "
                f"{100 * ffn:.1f} %; by layer, attention/feed-forward %: {layers})")


def _banded_attention(q: Tensor, kp: Tensor, vp: Tensor, key_valid: Tensor,
                      pos_bias: Tensor) -> Tensor:
    """Sliding-window attention without materializing each query's window.

    Query ``t`` of ``q`` (B, T, H, E) attends to rows ``t .. t + W - 1`` of ``kp``, ``vp``
    (B, W - 1 + T, H, E) whose ``key_valid`` (B, W - 1 + T) is set, with the bias
    ``pos_bias`` (H, W) of each offset. The queries are cut into blocks of ``S = min(W, T)``;
    each block attends to the ``S + W - 1`` key rows it can reach (one batched matrix
    product), the band outside each query's window masked. Keys are copied about twice
    instead of W times; the score FLOPs are ``(S + W - 1) / W`` times the window's.

    Returns:
        (B, T, H, E).
    """
    b, t, h, e = q.shape
    w = pos_bias.shape[1]
    s = max(1, min(w, t))
    nb = -(-t // s)
    extra = nb * s - t
    if extra:
        q = F.pad(q, (0, 0, 0, 0, 0, extra))
        kp = F.pad(kp, (0, 0, 0, 0, 0, extra))
        vp = F.pad(vp, (0, 0, 0, 0, 0, extra))
        key_valid = F.pad(key_valid, (0, extra), value=True)
    span = s + w - 1
    kb = kp.unfold(1, span, s)  # (B, nb, H, E, span)
    vb = vp.unfold(1, span, s)
    ok = key_valid.unfold(1, span, s)  # (B, nb, span)
    scores = torch.einsum("bnshe,bnhel->bnhsl", q.reshape(b, nb, s, h, e), kb)
    offset = (torch.arange(span, device=q.device).unsqueeze(0)
              - torch.arange(s, device=q.device).unsqueeze(1))  # (s, span): w of each key
    band = (offset >= 0) & (offset < w)
    scores = scores / math.sqrt(e) + pos_bias[:, offset.clamp(0, w - 1)]
    mask = band.view(1, 1, 1, s, span) & ok.view(b, nb, 1, 1, span)
    att = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    out = torch.einsum("bnhsl,bnhel->bnshe", att, vb)
    return out.reshape(b, nb * s, h, e)[:, :t]


class TransformerEncoder(EncoderModule[TransformerEncoderState]):
    """Streaming Transformer encoder, optionally gated (see the module docstring).

    Args:
        input_dim: F.
        subsampling, ...: see :class:`TransformerEncoderOptions`.
    """

    state_type = TransformerEncoderState

    def __init__(
        self,
        input_dim: int = 80,
        *,
        subsampling: int = _D.subsampling,
        conv_channels: int = _D.conv_channels,
        d_model: int = _D.d_model,
        num_heads: int = _D.num_heads,
        ffn_dim: int = _D.ffn_dim,
        num_layers: int = _D.num_layers,
        left_context: int = _D.left_context,
        output_dim: int = _D.output_dim,
        dropout: float = _D.dropout,
        gated: bool = _D.gated,
        arbitrator_dim: int = _D.arbitrator_dim,
        compute_weight: float = _D.compute_weight,
        target_share: float = _D.target_share,
        gate_noise: float = _D.gate_noise,
        arbitrator_gain: float = _D.arbitrator_gain,
    ) -> None:
        super().__init__()
        self.options = build_options(
            "TransformerEncoder", TransformerEncoderOptions, subsampling=subsampling,
            conv_channels=conv_channels, d_model=d_model, num_heads=num_heads,
            ffn_dim=ffn_dim, num_layers=num_layers, left_context=left_context,
            output_dim=output_dim, dropout=dropout, gated=gated,
            arbitrator_dim=arbitrator_dim, compute_weight=compute_weight,
            target_share=target_share, gate_noise=gate_noise,
            arbitrator_gain=arbitrator_gain)
        self.input_dim = input_dim
        self.subsampling = subsampling
        self.output_dim = output_dim
        self.right_context = 0
        self.chunk_frames_min = 1
        self.chunk_frames_multiple = 1
        self.window = left_context + 1
        self.d_model, self.heads = d_model, num_heads
        self.convs, self._conv_in_shapes, freq = subsampling_convs(
            input_dim, conv_channels, int(math.log2(subsampling)))
        self.input_proj = nn.Linear(conv_channels * freq, d_model)
        self.input_norm = nn.LayerNorm(d_model)
        self.blocks = nn.ModuleList(
            _Block(d_model, num_heads, ffn_dim, self.window, dropout, gated, arbitrator_dim,
                   arbitrator_gain) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.output_norm = nn.LayerNorm(d_model)
        self.output_proj = nn.Linear(d_model, output_dim)
        # per-frame FLOPs (2 x multiply-accumulates) of each sub-block
        self.flops_att = 2 * 2 * d_model * d_model  # query and output projections
        self.flops_kv = 2 * 2 * d_model * d_model
        # scores and weighted sum of every frame (queries of skipped frames are zeros): the
        # banded kernel's blocks of W queries reach 2W - 1 keys
        self.flops_core = 2 * 2 * (2 * self.window - 1) * d_model
        self.flops_ffn = 2 * 2 * d_model * ffn_dim
        #: in eval mode, run only the gated-on frames' sub-blocks (False: the dense
        #: computation multiplied by the hard gates; the same numbers, for comparisons)
        self.sparse_inference = True
        #: set to a :class:`GateTally` to count the gate decisions of eval-mode passes
        self.gate_tally: GateTally | None = None

    def frame_flops(self) -> dict[str, int]:
        """FLOPs (2 × multiply-accumulates) per encoder frame and block of each part:
        ``att`` (query and output projections: gated), ``kv`` (keys and values, every
        frame), ``core`` (scores and weighted sums of the offline banded kernel, every
        frame), ``ffn`` (gated) and ``arb`` (the arbitrator, 0 ungated)."""
        o = self.options
        arb = 2 * (o.d_model * o.arbitrator_dim + o.arbitrator_dim * 2) if o.gated else 0
        return {"att": self.flops_att, "kv": self.flops_kv, "core": self.flops_core,
                "ffn": self.flops_ffn,
                "arb": arb}

    def start_gate_tally(self) -> GateTally:
        """Count the gate decisions of the eval-mode passes from now on (a fresh tally)."""
        self.gate_tally = GateTally(len(self.blocks), self.frame_flops())
        return self.gate_tally

    @property
    def gated(self) -> bool:
        """Whether the blocks have arbitrators."""
        return bool(self.options.gated)

    def _blocks(self) -> list[_Block]:
        return [cast(_Block, b) for b in self.blocks]

    def _project(self, h: Tensor) -> Tensor:
        out: Tensor = self.dropout(self.input_norm(self.input_proj(flatten_freq(h))))
        return out

    # ------------------------------------------------------------------ the blocks
    def _layer(self, block: _Block, x: Tensor, kp: Tensor, vp: Tensor, key_valid: Tensor,
               frame_valid: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """One block on new frames ``x`` (B, T, d); ``kp``, ``vp`` (B, W - 1 + T, H, E) are
        the keys and values of the W - 1 frames before them and of them, so the window of
        frame t is rows t .. t + W - 1; ``key_valid`` (B, W - 1 + T) marks the rows of
        frames that exist. Returns the output, the gate probabilities and the noise-free
        gate decisions (B, T, 2) each (None ungated)."""
        b, t, d = x.shape
        gate = probs = decisions = None
        if block.arbitrator is not None:
            gate, probs, decisions = block.gates(x, self.options.gate_noise)
            if self.gate_tally is not None and not self.training:
                self.gate_tally.add(self._blocks().index(block), decisions, frame_valid)
        h = block.ln_att(x)
        if gate is not None and not self.training and self.sparse_inference:
            return (self._sparse(block, x, h, gate, kp, vp, key_valid, frame_valid), probs,
                    decisions)
        q = block.queries(h.reshape(b * t, d)).reshape(b, t, self.heads, -1)
        core = _banded_attention(q, kp, vp, key_valid, block.pos_bias)
        att = block.drop(block.o(core.reshape(b, t, d)))
        if gate is not None:
            att = att * gate[..., :1]
        x = x + att
        f = block.drop(block.ffn(block.ln_ffn(x)))
        if gate is not None:
            f = f * gate[..., 1:]
        return x + f, probs, decisions

    def _sparse(self, block: _Block, x: Tensor, h: Tensor, gate: Tensor, kp: Tensor,
                vp: Tensor, key_valid: Tensor, frame_valid: Tensor) -> Tensor:
        """The block with hard gates, running the projections only for the gated-on frames:
        their queries and output projections (the banded scores and weighted sums run for
        every frame, a skipped frame's query being zeros) and their feed-forward."""
        b, t, d = x.shape
        flat = x.reshape(b * t, d)
        on = ((gate[..., 0] > 0) & frame_valid).reshape(-1)
        idx = on.nonzero().squeeze(1)
        if len(idx):
            q = h.new_zeros(b * t, self.heads, d // self.heads)
            q[idx] = block.queries(h.reshape(b * t, d)[idx])
            core = _banded_attention(q.reshape(b, t, self.heads, -1), kp, vp, key_valid,
                                     block.pos_bias).reshape(b * t, d)
            flat = flat.index_add(0, idx, block.o(core[idx]))
        on = ((gate[..., 1] > 0) & frame_valid).reshape(-1)
        idx = on.nonzero().squeeze(1)
        if len(idx):
            flat = flat.index_add(0, idx, block.ffn(block.ln_ffn(flat[idx])))
        return flat.reshape(b, t, d)

    def _key_valid(self, first_pos: Tensor, t: int, device: torch.device) -> Tensor:
        """(B, W - 1 + t): key row r holds absolute frame first_pos - (W - 1) + r; valid
        when that frame exists (>= 0)."""
        rows = torch.arange(self.window - 1 + t, device=device).unsqueeze(0)
        return first_pos.view(-1, 1) - (self.window - 1) + rows >= 0

    # ------------------------------------------------------------------ full pass
    def forward(self, x: Tensor, x_lens: Tensor) -> EncoderOutput:
        """Whole utterances: ``y_lens = ceil(x_lens / subsampling)``; gated models add the
        compute loss (``aux_losses["compute"]``, when ``compute_weight > 0``) and gate
        statistics.

        Raises:
            InputDataError: on a wrong shape or an empty item.
        """
        check_input(x, x_lens, self.input_dim, allow_empty=False)
        h, lens = subsampling_full(self.convs, x, x_lens)
        h = self._project(h)
        b, t, _ = h.shape
        frame_valid = torch.arange(t, device=h.device).unsqueeze(0) < lens.unsqueeze(1)
        key_valid = self._key_valid(torch.zeros(b, dtype=torch.long, device=h.device), t,
                                    h.device)
        probs: list[Tensor] = []
        hard: list[Tensor] = []
        for block in self._blocks():
            k, v = block.key_values(block.ln_att(h))
            pad = (0, 0, 0, 0, self.window - 1, 0)
            h, p, g = self._layer(block, h, F.pad(k, pad), F.pad(v, pad), key_valid,
                                  frame_valid)
            if p is not None and g is not None:
                probs.append(p)
                hard.append(g)
        y = self.output_proj(self.output_norm(h))
        if not probs:
            return EncoderOutput(y, lens)
        return self._with_compute(y, lens, probs, hard, frame_valid)

    def _with_compute(self, y: Tensor, lens: Tensor, probs: list[Tensor], hard: list[Tensor],
                      frame_valid: Tensor) -> EncoderOutput:
        m = frame_valid.unsqueeze(-1).to(y.dtype)
        n = m.sum().clamp_min(1.0)
        costs = torch.tensor([self.flops_att, self.flops_ffn], dtype=y.dtype, device=y.device)
        total = costs.sum() * len(probs)
        mean_p = torch.stack([(p * m).sum(dim=(0, 1)) / n for p in probs])  # (L, 2)
        mean_h = torch.stack([(g * m).sum(dim=(0, 1)) / n for g in hard])
        share = (mean_p * costs).sum() / total
        share_hard = (mean_h * costs).sum() / total
        aux: dict[str, Tensor] = {}
        weight = self.options.compute_weight
        if weight > 0:
            target = self.options.target_share
            aux["compute"] = weight * (share if target < 0 else (share - target) ** 2)
        stats: dict[str, float | Tensor] = {
            "compute_share": float(share.detach()),
            "compute_share_hard": float(share_hard.detach()),
            "att_rate": float(mean_h[:, 0].mean()), "ffn_rate": float(mean_h[:, 1].mean()),
        }
        return EncoderOutput(y, lens, aux, stats)

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> TransformerEncoderState:
        """State of ``batch_size`` fresh streams."""
        buffers, buf_lens = subsampling_state(self._conv_in_shapes, batch_size, device, dtype)
        cache = (batch_size, self.window - 1, self.heads, self.d_model // self.heads)
        zeros = tuple(torch.zeros(cache, device=device, dtype=dtype) for _ in self.blocks)
        counts = torch.zeros(batch_size, dtype=torch.long, device=device)
        return TransformerEncoderState(
            conv_buffers=buffers, conv_buffer_lens=buf_lens, keys=zeros,
            values=tuple(z.clone() for z in zeros), frames_in=counts, frames_out=counts.clone())

    def stream(self, x: Tensor, x_lens: Tensor, state: TransformerEncoderState | None = None,
               *, final: bool = False) -> tuple[Tensor, Tensor, TransformerEncoderState]:
        """The next chunk of each stream (any chunking; nothing is held back).

        Raises:
            InputDataError: on a wrong shape, a state of another encoder or batch size, or
                a key cache of another shape.
        """
        state, given = self._stream_start(x, x_lens, state)
        if given and state.keys and tuple(state.keys[0].shape[1:]) != (
                self.window - 1, self.heads, self.d_model // self.heads):
            raise InputDataError(
                f"stream state key cache {tuple(state.keys[0].shape[1:])} does not fit this "
                f"encoder ({self.window - 1}, {self.heads}, {self.d_model // self.heads})")
        h, lens, bufs, buf_lens = subsampling_stream(
            self.convs, state.conv_buffers, state.conv_buffer_lens, x, x_lens)
        h = self._project(h)
        b, t, _ = h.shape
        frame_valid = torch.arange(t, device=h.device).unsqueeze(0) < lens.unsqueeze(1)
        key_valid = self._key_valid(state.frames_out, t, h.device)
        keys, values = [], []
        for i, block in enumerate(self._blocks()):
            k, v = block.key_values(block.ln_att(h))
            kc = torch.cat([state.keys[i], k], dim=1)  # (B, W - 1 + t, H, E)
            vc = torch.cat([state.values[i], v], dim=1)
            if t:
                h, _, _ = self._layer(block, h, kc, vc, key_valid, frame_valid)
            keys.append(take_frames(kc, lens, self.window - 1))  # the last W - 1 valid
            values.append(take_frames(vc, lens, self.window - 1))
        y = self.output_proj(self.output_norm(h))
        new = TransformerEncoderState(
            conv_buffers=bufs, conv_buffer_lens=buf_lens, keys=tuple(keys),
            values=tuple(values), frames_in=state.frames_in + x_lens.to(torch.long),
            frames_out=state.frames_out + lens)
        return y, lens, new


register_encoder("transformer", options=TransformerEncoderOptions)(TransformerEncoder)
