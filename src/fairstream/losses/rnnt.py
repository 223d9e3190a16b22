"""RNN-T loss as one custom autograd function that never keeps the full log-softmax.

Dimension letters: B batch, T encoder frames, U target tokens (the lattice has U+1 rows),
V vocabulary size including the blank.

How it works
------------
For every lattice node (b, t, u) the forward pass keeps only two numbers: the blank
log-probability and the log-probability of the next target token (``B·T·(U+1)`` values each).
They are gathered from a log-softmax computed piece by piece (at most 2^22 logits at a time:
a few short utterances, one utterance, or a part of one; one fused ATen kernel per piece) into
a reused scratch buffer, so the full log-softmax never exists. The alpha recursion runs over
T, and within a frame row over U as a single ``logcumsumexp``: with ``S[u] = Σ_{j<u} label[t, j]``,

    alpha[t, u] = S[u] + logcumsumexp_k≤u(alpha[t-1, k] + blank[t-1, k] - S[k]).

The recursions run in float64 on these small (B, T, U+1) tensors whatever the logits' dtype.

The backward pass runs the mirrored beta recursion and forms the gradient once, in a single
buffer of the logits' size. With the node occupancies (posterior probabilities that the
alignment leaves node (t, u) by a blank or by the next label)

    A_blank[t, u] = exp(alpha[t, u] + blank[t, u] + beta[t+1, u] - log P)
    A_label[t, u] = exp(alpha[t, u] + label[t, u] + beta[t, u+1] - log P)

the gradient of ``-log P`` with respect to the logits z[t, u, :] is "softmax minus occupancy":

    dL/dz[t, u, v] = softmax(z[t, u])[v] · (A_blank + A_label)[t, u]
                     - A_blank[t, u] · [v = blank] - A_label[t, u] · [v = y_{u+1}].

The softmax is written straight into the gradient buffer, scaled in place by the node weight
(which also carries the reduction and the incoming gradient), and the two occupancies are
subtracted at their indices. As this needs no scratch memory, the backward pass works on the
whole batch at once (per utterance when much of it is padding, per chunk for strided logits).
The only large allocation of forward + backward is the returned gradient itself.

FastEmit (Yu et al., 2021, "FastEmit: Low-latency Streaming ASR with Sequence-level Emission
Regularization") is implemented as a change of the gradient only, as in the paper: the gradient
with respect to the label (non-blank) emission log-probabilities is multiplied by ``1 + λ``
while the blank one is left alone, and this modified gradient is pushed through the
log-softmax. Concretely ``A_label`` is replaced by ``(1 + λ)·A_label`` in both places of the
formula above. The returned loss value is always the plain negative log-likelihood (so logged
numbers stay comparable across λ); other implementations (NeMo, warprnnt-numba) report
``(1 + λ)·NLL`` instead, with the same gradient.

A label bias (``label_bias``, a constant (B, T, U) tensor) is added to the next-label
log-probabilities of the lattice before the recursions: the loss becomes ``-log P̃`` of the
biased lattice and the gradient is the same "softmax minus occupancy" with the biased
occupancies (the bias does not depend on the logits, so ``d(label_lp + bias)/dz`` is
unchanged). A negative bias that grows with the frame makes late emissions of chosen labels
costly: the end-of-turn latency penalty of the multi-talker transducer
(:mod:`fairstream.multitalker`) is one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

import torch
from torch.autograd.function import once_differentiable

from fairstream.errors import InputDataError

__all__ = ["rnnt_loss"]

Reduction = Literal["mean", "sum", "none"]

# Elements per piece when streaming the forward log-softmax over the logits (16 MB in
# float32): the size of the forward's scratch buffer. Pieces are large because every piece
# costs multi-threaded kernel launches, each waiting for all intra-op threads, which is slow
# on a busy machine; they still fit the last-level cache, and stay far below the logits' size.
_CHUNK_ELEMENTS = 1 << 22

_NEG_INF = float("-inf")


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lens: torch.Tensor,
    target_lens: torch.Tensor,
    *,
    blank: int = 0,
    reduction: Reduction = "mean",
    fastemit_lambda: float = 0.0,
    clamp: float | None = None,
    label_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """RNN-T negative log-likelihood of the targets given un-normalized joiner outputs.

    Args:
        logits: (B, T, U+1, V) float32 or float64 joiner outputs before any softmax. Positions
            beyond an utterance's lengths are padding and may hold anything.
        targets: (B, U) integer token ids; entries beyond ``target_lens`` are ignored.
        logit_lens: (B,) integer number of valid frames per utterance, ``1 <= T_b <= T``.
        target_lens: (B,) integer number of valid tokens per utterance, ``0 <= U_b <= U``.
        blank: id of the blank symbol (must not occur in the valid targets).
        reduction: ``"none"`` returns the (B,) per-utterance losses, ``"sum"`` their sum and
            ``"mean"`` their mean over utterances.
        fastemit_lambda: FastEmit weight λ >= 0; scales the gradient of the label emission
            log-probabilities by ``1 + λ`` (see the module docstring). The loss value is not
            changed.
        clamp: if given (> 0), every element of each utterance's gradient with respect to the
            logits is clipped to ``[-clamp, clamp]`` before the reduction weights are applied.
        label_bias: optional (B, T, U) finite constant added to the log-probability of
            emitting target ``u`` at frame ``t`` (see the module docstring); not
            differentiated.

    Returns:
        A scalar for ``"mean"`` and ``"sum"``, a (B,) tensor for ``"none"``, in the dtype of
        ``logits``. An utterance without any possible alignment (``-inf`` logits) gets a
        non-finite loss and a NaN gradient; callers that train decide what to do with it.

    Raises:
        InputDataError: (a ``ValueError``) naming the first problem found in the arguments.
    """
    _validate(logits, targets, logit_lens, target_lens, blank, reduction, fastemit_lambda, clamp)
    if label_bias is not None:
        expected = (logits.shape[0], logits.shape[1], logits.shape[2] - 1)
        if not isinstance(label_bias, torch.Tensor) or tuple(label_bias.shape) != expected:
            got = (tuple(label_bias.shape) if isinstance(label_bias, torch.Tensor)
                   else type(label_bias).__name__)
            raise InputDataError(f"label_bias must be (B, T, U) = {expected}, got {got}")
        if not bool(torch.isfinite(label_bias).all()):
            raise InputDataError("label_bias has non-finite values")
        label_bias = label_bias.detach().to(device=logits.device, dtype=torch.float64)
    return _apply_rnnt_loss(
        logits,
        targets.to(device=logits.device, dtype=torch.int64),
        logit_lens.to(device=logits.device, dtype=torch.int64),
        target_lens.to(device=logits.device, dtype=torch.int64),
        blank,
        reduction,
        float(fastemit_lambda),
        None if clamp is None else float(clamp),
        label_bias,
    )


def _validate(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lens: torch.Tensor,
    target_lens: torch.Tensor,
    blank: int,
    reduction: str,
    fastemit_lambda: float,
    clamp: float | None,
) -> None:
    """Raise InputDataError naming the first inconsistent argument."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputDataError(f"logits must be a 4-D tensor (B, T, U+1, V), got {shape}")
    if logits.dtype not in (torch.float32, torch.float64):
        raise InputDataError(f"logits must be float32 or float64, got {logits.dtype}")
    batch, max_t, max_u1, vocab = logits.shape
    for name, tensor, dim in (
        ("targets", targets, 2),
        ("logit_lens", logit_lens, 1),
        ("target_lens", target_lens, 1),
    ):
        if not isinstance(tensor, torch.Tensor):
            raise InputDataError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise InputDataError(f"{name} must have an integer dtype, got {tensor.dtype}")
        if tensor.dim() != dim:
            raise InputDataError(f"{name} must be {dim}-D, got shape {tuple(tensor.shape)}")
        if tensor.shape[0] != batch:
            raise InputDataError(
                f"{name} has batch size {tensor.shape[0]} but logits have batch size {batch}"
            )
    if targets.shape[1] + 1 != max_u1:
        raise InputDataError(
            f"logits dim 2 must be targets.shape[1] + 1 = {targets.shape[1] + 1} "
            f"(U+1 lattice rows), got {max_u1}"
        )
    if batch == 0:
        raise InputDataError("logits have an empty batch (B = 0)")
    if max_t == 0 or vocab == 0:
        raise InputDataError(f"logits have an empty dimension: shape {tuple(logits.shape)}")
    if not 0 <= blank < vocab:
        raise InputDataError(f"blank id {blank} is outside the vocabulary [0, {vocab})")
    if reduction not in ("mean", "sum", "none"):
        raise InputDataError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not fastemit_lambda >= 0.0:  # also rejects NaN
        raise InputDataError(f"fastemit_lambda must be >= 0, got {fastemit_lambda}")
    if clamp is not None and not clamp > 0.0:
        raise InputDataError(f"clamp must be None or > 0, got {clamp}")

    t_lens = logit_lens.detach().cpu().to(torch.int64)
    u_lens = target_lens.detach().cpu().to(torch.int64)
    bad = torch.nonzero((t_lens < 1) | (t_lens > max_t)).flatten()
    if bad.numel():
        i = int(bad[0])
        raise InputDataError(
            f"logit_lens[{i}] = {int(t_lens[i])} must be in [1, {max_t}] (logits dim 1)"
        )
    bad = torch.nonzero((u_lens < 0) | (u_lens > max_u1 - 1)).flatten()
    if bad.numel():
        i = int(bad[0])
        raise InputDataError(
            f"target_lens[{i}] = {int(u_lens[i])} must be in [0, {max_u1 - 1}] (targets dim 1)"
        )
    tg = targets.detach().cpu().to(torch.int64)
    valid = torch.arange(max_u1 - 1).unsqueeze(0) < u_lens.unsqueeze(1)
    bad = torch.nonzero(valid & (tg == blank))
    if bad.numel():
        i, j = (int(x) for x in bad[0])
        raise InputDataError(f"targets[{i}, {j}] is the blank id {blank}")
    bad = torch.nonzero(valid & ((tg < 0) | (tg >= vocab)))
    if bad.numel():
        i, j = (int(x) for x in bad[0])
        raise InputDataError(
            f"targets[{i}, {j}] = {int(tg[i, j])} is outside the vocabulary [0, {vocab})"
        )


Block = tuple[slice, slice, slice]


def _blocks(shape: torch.Size, t_lens: list[int], chunk: int) -> list[Block]:
    """Split (B, T, U+1, V) logits into ``(b, t, u)`` slices of about ``chunk`` elements.

    Logits of at most ``chunk`` elements are one piece; else, when at least two utterances
    fit in a chunk, pieces are groups of whole utterances (padded frames included); else
    pieces lie inside one utterance, span whole frame rows or a part of a single frame row,
    and skip the frames beyond the utterance's length. A piece of a contiguous tensor is
    therefore contiguous.
    """
    batch, max_t, max_u1, vocab = shape
    if shape.numel() <= chunk:
        return [(slice(None), slice(None), slice(None))]
    row = max_u1 * vocab
    if 2 * max_t * row <= chunk:
        group = chunk // (max_t * row)
        return [
            (slice(b0, min(b0 + group, batch)), slice(None), slice(None))
            for b0 in range(0, batch, group)
        ]
    blocks: list[Block] = []
    for b, t_len in enumerate(t_lens):
        bs = slice(b, b + 1)
        if row <= chunk:
            step = chunk // row
            blocks += [
                (bs, slice(t0, min(t0 + step, t_len)), slice(None)) for t0 in range(0, t_len, step)
            ]
        else:
            u_step = max(1, chunk // vocab)
            blocks += [
                (bs, slice(t0, t0 + 1), slice(u0, min(u0 + u_step, max_u1)))
                for t0 in range(t_len)
                for u0 in range(0, max_u1, u_step)
            ]
    return blocks


def _backward_chunk(logits: torch.Tensor, t_lens: list[int]) -> int:
    """Piece size of the backward pass.

    The softmax is written straight into the gradient buffer, so with contiguous logits a
    piece needs no scratch memory at all and pieces are as large as possible (fewer kernel
    launches): the whole batch at once, or one utterance per piece when more than a quarter
    of the frames are padding (which the whole-batch piece would compute for nothing).
    Strided logits are copied piece by piece, so they get the forward's piece size.
    """
    if not logits.is_contiguous():
        return _CHUNK_ELEMENTS
    batch, max_t = logits.shape[:2]
    if 4 * sum(t_lens) >= 3 * batch * max_t:
        return max(logits.numel(), 1)
    return max(logits[0].numel(), 1)


def _expand_to_block(index: torch.Tensor, block: Block, n_frames: int) -> torch.Tensor:
    """(B, U+1, K) per-row index -> (b, t, u, K) gather/scatter index of one block."""
    bs, _, us = block
    return index[bs, us].unsqueeze(1).expand(-1, n_frames, -1, -1)


def _label_index(targets: torch.Tensor, target_lens: torch.Tensor, blank: int) -> torch.Tensor:
    """(B, U+1) index of the next label at each lattice row; the blank where there is none."""
    batch, max_u = targets.shape
    has_label = torch.arange(max_u, device=targets.device) < target_lens.unsqueeze(1)
    index = torch.full((batch, max_u + 1), blank, dtype=torch.int64, device=targets.device)
    index[:, :-1] = torch.where(has_label, targets, blank)
    return index


def _emission_log_probs(
    logits: torch.Tensor, label_index: torch.Tensor, blank: int, t_lens: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blank and next-label log-probabilities, from a log-softmax over V taken piece by piece.

    Returns:
        ``(blank_lp, label_lp)``, each (B, T, U+1) in the dtype of ``logits``. Entries
        outside the lattice are unspecified (possibly uninitialized): callers mask them.
    """
    batch, max_t, max_u1, vocab = logits.shape
    blank_lp = logits.new_empty(batch, max_t, max_u1)
    label_lp = logits.new_empty(batch, max_t, max_u1)
    scratch = logits.new_empty(min(_CHUNK_ELEMENTS, logits.numel()) + vocab)
    for block in _blocks(logits.shape, t_lens, _CHUNK_ELEMENTS):
        x = logits[block].contiguous()  # a view unless the logits are strided
        tmp = scratch[: x.numel()].view(x.shape)
        torch.ops.aten._log_softmax.out(x, -1, False, out=tmp)
        blank_lp[block] = tmp[..., blank]
        index = _expand_to_block(label_index.unsqueeze(-1), block, x.shape[1])
        label_lp[block] = tmp.gather(3, index).squeeze(3)
    return blank_lp, label_lp


def _label_prefix_sums(label_lp: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sums over U: ``S[b, t, u] = Σ_{j<u} label_lp[b, t, j]``, (B, T, U+1)."""
    cum = torch.zeros_like(label_lp)
    cum[:, :, 1:] = label_lp[:, :, :-1].cumsum(dim=2)
    return cum


def _alpha(blank_lp: torch.Tensor, label_lp: torch.Tensor) -> torch.Tensor:
    """Forward variables log alpha[b, t, u] (log-probability of reaching node (t, u)).

    Args:
        blank_lp: (B, T, U+1) blank log-probabilities (finite everywhere).
        label_lp: (B, T, U+1) next-label log-probabilities (finite everywhere).

    Returns:
        (B, T, U+1) log alpha; values outside an utterance's lattice are meaningless.
    """
    batch, max_t, max_u1 = blank_lp.shape
    cum = _label_prefix_sums(label_lp)
    alpha = torch.empty_like(blank_lp)
    start = torch.full((batch, max_u1), _NEG_INF, dtype=blank_lp.dtype, device=blank_lp.device)
    start[:, 0] = 0.0
    arrive = start
    for t in range(max_t):
        if t > 0:
            arrive = alpha[:, t - 1] + blank_lp[:, t - 1]
        s = cum[:, t]
        alpha[:, t] = torch.logcumsumexp(arrive - s, dim=1) + s
    return alpha


def _beta(
    blank_lp: torch.Tensor, label_lp: torch.Tensor, t_lens: torch.Tensor, u_lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward variables of every utterance's lattice.

    Args:
        blank_lp: (B, T, U+1) blank log-probabilities (finite everywhere).
        label_lp: (B, T, U+1) next-label log-probabilities (finite everywhere).
        t_lens: (B,) valid frames.
        u_lens: (B,) valid tokens.

    Returns:
        ``(beta, beta_next)``, both (B, T, U+1): ``beta[t, u]`` is the log-probability of
        finishing from node (t, u) and ``beta_next[t, u]`` the one of finishing after a blank
        from (t, u), i.e. ``beta[t+1, u]``, which is 0 at the terminal node (T_b - 1, U_b).
        Both are -inf outside the lattice.
    """
    batch, max_t, max_u1 = blank_lp.shape
    dtype, device = blank_lp.dtype, blank_lp.device
    # with S as in _alpha: beta[t, u] = -S[u] + log Σ_{k>=u} exp(next[k] + blank[t, k] + S[k]),
    # where next = beta[t+1] (or the virtual end after the last frame)
    cum = _label_prefix_sums(label_lp)
    final = torch.full((batch, max_u1), _NEG_INF, dtype=dtype, device=device)
    final[torch.arange(batch, device=device), u_lens] = 0.0
    ends_after = t_lens.unsqueeze(1)  # (B, 1): row index T_b holds the virtual end
    beta = torch.empty_like(blank_lp)
    beta_next = torch.empty_like(blank_lp)
    nxt = torch.full((batch, max_u1), _NEG_INF, dtype=dtype, device=device)
    for t in range(max_t - 1, -1, -1):
        nxt = torch.where(ends_after == t + 1, final, nxt)
        beta_next[:, t] = nxt
        s = cum[:, t]
        x = (nxt + blank_lp[:, t] + s).flip(1)
        row = torch.logcumsumexp(x, dim=1).flip(1) - s
        beta[:, t] = row
        nxt = row
    return beta, beta_next


class _RNNTLossFunction(torch.autograd.Function):
    """Forward: per-utterance NLL. Backward: softmax − occupancy, formed once in place."""

    @staticmethod
    def forward(
        ctx: Any,  # Any: autograd's context object, given attributes at run time
        logits: torch.Tensor,
        targets: torch.Tensor,
        logit_lens: torch.Tensor,
        target_lens: torch.Tensor,
        blank: int,
        reduction: str,
        fastemit_lambda: float,
        clamp: float | None,
        label_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, max_t, max_u1, _ = logits.shape
        t_list = logit_lens.tolist()
        u_list = target_lens.tolist()
        t_idx = torch.arange(max_t, device=logits.device)
        u_idx = torch.arange(max_u1, device=logits.device)
        valid = (t_idx.view(1, -1, 1) < logit_lens.view(-1, 1, 1)) & (
            u_idx.view(1, 1, -1) <= target_lens.view(-1, 1, 1)
        )
        label_index = _label_index(targets, target_lens, blank)
        blank_lp, label_lp = _emission_log_probs(logits, label_index, blank, t_list)
        # inside the lattice only; 0 elsewhere keeps the recursions finite whatever the padding
        has_label = valid.clone()
        has_label[:, :, :-1] &= (label_index[:, :-1] != blank).unsqueeze(1)
        has_label[:, :, -1] = False
        zero = torch.zeros((), dtype=torch.float64, device=logits.device)
        blank_lp = torch.where(valid, blank_lp.to(torch.float64), zero)
        label_lp = label_lp.to(torch.float64)
        if label_bias is not None:
            label_lp[:, :, :-1] += label_bias
        label_lp = torch.where(has_label, label_lp, zero)
        alpha = _alpha(blank_lp, label_lp)
        rows = torch.arange(batch, device=logits.device)
        last_t = logit_lens - 1
        log_like = alpha[rows, last_t, target_lens] + blank_lp[rows, last_t, target_lens]
        nll = (-log_like).to(logits.dtype)

        ctx.save_for_backward(
            logits, blank_lp, label_lp, label_index, alpha, log_like, logit_lens, target_lens
        )
        ctx.blank = blank
        ctx.reduction = reduction
        ctx.fastemit_lambda = fastemit_lambda
        ctx.clamp = clamp
        ctx.lens = (t_list, u_list)
        if reduction == "none":
            return nll
        total = nll.sum()
        return total / batch if reduction == "mean" else total

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: torch.Tensor  # Any: autograd's context object, as in forward
    ) -> tuple[torch.Tensor | None, ...]:
        nones = (None,) * 8
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        (
            logits,
            blank_lp,
            label_lp,
            label_index,
            alpha,
            log_like,
            logit_lens,
            target_lens,
        ) = ctx.saved_tensors
        t_list, u_list = ctx.lens
        batch = logits.shape[0]
        blank: int = ctx.blank

        beta, beta_next = _beta(blank_lp, label_lp, logit_lens, target_lens)
        ll = log_like.view(-1, 1, 1)
        occ_blank = torch.exp(alpha + blank_lp + beta_next - ll)
        beta_up = torch.full_like(beta, _NEG_INF)
        beta_up[:, :, :-1] = beta[:, :, 1:]
        occ_label = torch.exp(alpha + label_lp + beta_up - ll)
        if ctx.fastemit_lambda:
            occ_label.mul_(1.0 + ctx.fastemit_lambda)

        # per-utterance weight of d(total)/d(nll_b)
        if ctx.reduction == "none":
            scale = grad_out.to(torch.float64).reshape(batch)
        else:
            upstream = grad_out.to(torch.float64).reshape(())
            scale = (upstream / batch if ctx.reduction == "mean" else upstream).expand(batch)
        clamp: float | None = ctx.clamp
        if clamp is None:
            # fold the reduction weight into the occupancies: one pass fewer over the logits
            occ_blank.mul_(scale.view(-1, 1, 1))
            occ_label.mul_(scale.view(-1, 1, 1))
        weight = (occ_blank + occ_label).to(logits.dtype)
        occ_blank = occ_blank.to(logits.dtype)
        occ_label = occ_label.to(logits.dtype)

        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        scale_col = scale.to(logits.dtype).view(-1, 1, 1, 1)
        for block in _blocks(logits.shape, t_list, _backward_chunk(logits, t_list)):
            g = grad[block]  # contiguous, see _blocks
            torch.ops.aten._softmax.out(logits[block].contiguous(), -1, False, out=g)
            g.mul_(weight[block].unsqueeze(-1))
            g[..., blank].sub_(occ_blank[block])
            index = _expand_to_block(label_index.unsqueeze(-1), block, g.shape[1])
            g.scatter_add_(3, index, occ_label[block].neg().unsqueeze(-1))
            if clamp is not None:
                g.clamp_(-clamp, clamp).mul_(scale_col[block[0]])
        # padding (possibly NaN from arbitrary padded logits) gets an exact zero gradient
        for b in range(batch):
            grad[b, t_list[b] :].zero_()
            grad[b, : t_list[b], u_list[b] + 1 :].zero_()
        return (grad, *nones)


_Tensor = torch.Tensor
#: :meth:`_RNNTLossFunction.apply` with the signature of its ``forward`` (without ``ctx``):
#: autograd declares ``Function.apply`` untyped.
_apply_rnnt_loss = cast(
    Callable[[_Tensor, _Tensor, _Tensor, _Tensor, int, str, float, float | None,
              _Tensor | None], _Tensor],
    _RNNTLossFunction.apply,
)
