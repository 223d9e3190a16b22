"""Speaker-embedding extractor (a small ECAPA-TDNN) and the additive-angular-margin softmax head.

ECAPA-TDNN (Desplanques et al., Interspeech 2020) in miniature: a 1-D convolution over frames,
three SE-Res2 blocks with dilations 2, 3, 4, multi-layer feature aggregation (the outputs of
the three blocks concatenated and mixed by a 1×1 convolution), attentive statistics pooling
with global context, and a linear layer to a 192-dimensional embedding. 1-D convolutions over
time keep it cheap on a CPU (a thin ResNet spends its compute on 2-D convolutions over the
time × frequency plane).

Dimension letters: B batch, T frames, F feature bins (80), C channels, E embedding size (192),
K speakers (classes of the training head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AAMSoftmax",
    "AttentiveStatsPool",
    "EcapaTdnn",
    "SpeakerModelConfig",
    "build_speaker_extractor",
    "frame_mask",
]


@dataclass(frozen=True)
class SpeakerModelConfig:
    """Hyper-parameters of :class:`EcapaTdnn`.

    Attributes:
        feature_dim: F, input feature bins.
        channels: C, width of the SE-Res2 blocks (ECAPA's paper uses 512 or 1024).
        embedding_dim: E.
        scale: Res2 scale (number of channel groups in a Res2 convolution).
        se_bottleneck: bottleneck width of the squeeze-excitation.
        attention_dim: hidden width of the attentive pooling.
        dilations: one SE-Res2 block per dilation.
    """

    feature_dim: int = 80
    channels: int = 128
    embedding_dim: int = 192
    scale: int = 4
    se_bottleneck: int = 64
    attention_dim: int = 64
    dilations: tuple[int, ...] = (2, 3, 4)


def frame_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, T) bool mask, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, C, T), mask (B, 1, T) float -> (B, C, 1)."""
    return (x * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp_min(1.0)


class _TdnnBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2
        )
        self.norm = nn.BatchNorm1d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.norm(F.relu(self.conv(x)))
        return out


class _Res2Conv(nn.Module):
    """Res2Net convolution: channel groups processed in a chain, each seeing the previous."""

    def __init__(self, channels: int, scale: int, dilation: int) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels {channels} not divisible by scale {scale}")
        width = channels // scale
        self.scale = scale
        self.blocks = nn.ModuleList(_TdnnBlock(width, width, 3, dilation) for _ in range(scale - 1))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        parts = torch.chunk(x, self.scale, dim=1)
        out = [parts[0]]
        y = parts[0]
        for i, block in enumerate(self.blocks):
            y = block(parts[i + 1] if i == 0 else parts[i + 1] + y) * mask
            out.append(y)
        return torch.cat(out, dim=1)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv1d(channels, bottleneck, 1)
        self.fc2 = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        s = _masked_mean(x, mask)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class _SeRes2Block(nn.Module):
    def __init__(self, channels: int, scale: int, dilation: int, se_bottleneck: int) -> None:
        super().__init__()
        self.pre = _TdnnBlock(channels, channels)
        self.res2 = _Res2Conv(channels, scale, dilation)
        self.post = _TdnnBlock(channels, channels)
        self.se = _SqueezeExcite(channels, se_bottleneck)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.res2(self.pre(x) * mask, mask)
        out: Tensor = x + self.se(self.post(h) * mask, mask)
        return out


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling with global context (ECAPA-TDNN).

    Per channel, attention weights over frames come from the frame itself concatenated with the
    utterance's mean and standard deviation; the output is the attention-weighted mean and
    standard deviation. Padded frames get zero weight.
    """

    def __init__(self, channels: int, attention_dim: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv1d(3 * channels, attention_dim, 1),
            nn.Tanh(),
            nn.Conv1d(attention_dim, channels, 1),
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, C, T), mask (B, 1, T) float -> (B, 2C)."""
        mean = _masked_mean(x, mask)
        std = (_masked_mean((x - mean) ** 2, mask)).clamp_min(1e-6).sqrt()
        ctx = torch.cat([x, mean.expand_as(x), std.expand_as(x)], dim=1)
        logits = self.attention(ctx).masked_fill(mask == 0, float("-inf"))
        w = torch.softmax(logits, dim=-1)
        mu = (w * x).sum(-1)
        sigma = ((w * x * x).sum(-1) - mu * mu).clamp_min(1e-6).sqrt()
        return torch.cat([mu, sigma], dim=1)


class EcapaTdnn(nn.Module):
    """Small ECAPA-TDNN speaker-embedding extractor.

    Example:
        >>> model = EcapaTdnn(SpeakerModelConfig(channels=64))
        >>> emb = model(torch.randn(2, 200, 80), torch.tensor([200, 150]))  # (2, 192)
    """

    def __init__(self, config: SpeakerModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.front = _TdnnBlock(config.feature_dim, c, kernel=5)
        self.blocks = nn.ModuleList(
            _SeRes2Block(c, config.scale, d, config.se_bottleneck) for d in config.dilations
        )
        mfa = c * len(config.dilations)
        self.mfa = _TdnnBlock(mfa, mfa)
        self.pool = AttentiveStatsPool(mfa, config.attention_dim)
        self.pool_norm = nn.BatchNorm1d(2 * mfa)
        self.embed = nn.Linear(2 * mfa, config.embedding_dim)

    @property
    def embedding_dim(self) -> int:
        """E."""
        return self.config.embedding_dim

    def forward(self, x: Tensor, x_lens: Tensor) -> Tensor:
        """Embed utterances.

        Args:
            x: (B, T, F) features (CMVN applied).
            x_lens: (B,) valid frames per utterance (each >= 1).

        Returns:
            (B, E) embeddings (not length-normalized; cosine scoring normalizes).
        """
        mask = frame_mask(x_lens, x.shape[1]).unsqueeze(1).to(x.dtype)  # (B, 1, T)
        h = self.front(x.transpose(1, 2) * mask) * mask
        outs = []
        for block in self.blocks:
            h = block(h, mask) * mask
            outs.append(h)
        h = self.mfa(torch.cat(outs, dim=1)) * mask
        out: Tensor = self.embed(self.pool_norm(self.pool(h, mask)))
        return out


def build_speaker_extractor(config: SpeakerModelConfig | None = None) -> EcapaTdnn:
    """Keyword-free factory: the extractor for ``config`` (defaults: C=128, E=192)."""
    return EcapaTdnn(config or SpeakerModelConfig())


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): logits ``s · cos(θ_y + m)`` for the true class.

    Where ``θ_y + m`` would pass π (so the cosine would no longer decrease with the angle), the
    usual linear fallback ``cos θ - m sin m`` is used (as in ArcFace's reference implementation).
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, *, margin: float = 0.2, scale: float = 30.0
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"AAM-softmax needs at least two classes, got {num_classes}")
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.margin = margin
        self.scale = scale

    def logits(self, emb: Tensor, labels: Tensor | None = None) -> Tensor:
        """emb (B, E), labels (B,) or None (no margin) -> (B, K) scaled logits."""
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        if labels is None or self.margin == 0:
            return self.scale * cos
        sin = (1.0 - cos * cos).sqrt()
        m = self.margin
        phi = cos * math.cos(m) - sin * math.sin(m)
        phi = torch.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.scale * (onehot * phi + (1 - onehot) * cos)

    def forward(self, emb: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (mean cross-entropy loss, accuracy of the margin-free logits)."""
        loss = F.cross_entropy(self.logits(emb, labels), labels)
        with torch.no_grad():
            acc = (self.logits(emb).argmax(-1) == labels).float().mean()
        return loss, acc
