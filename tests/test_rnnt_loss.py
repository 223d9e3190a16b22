"""RNN-T loss: agreement with a plain autograd DP and with warprnnt-numba, gradcheck, FastEmit."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from warprnnt_numba import RNNTLossNumba

import fairstream.losses.rnnt as rnnt_module
from fairstream.errors import InputDataError
from fairstream.losses import rnnt_loss

# ---------------------------------------------------------------------------------------------
# reference: log_softmax + the textbook alpha recursion, node by node, differentiated by autograd


def reference_nll_from_log_probs(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    logit_lens: torch.Tensor,
    target_lens: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """(B,) negative log-likelihoods from (B, T, U+1, V) log-probabilities."""
    out = []
    for b in range(log_probs.shape[0]):
        t_len, u_len = int(logit_lens[b]), int(target_lens[b])
        alpha: dict[tuple[int, int], torch.Tensor] = {}
        for t in range(t_len):
            for u in range(u_len + 1):
                if t == 0 and u == 0:
                    alpha[t, u] = log_probs.new_zeros(())
                    continue
                terms = []
                if t > 0:
                    terms.append(alpha[t - 1, u] + log_probs[b, t - 1, u, blank])
                if u > 0:
                    terms.append(alpha[t, u - 1] + log_probs[b, t, u - 1, targets[b, u - 1]])
                alpha[t, u] = torch.logsumexp(torch.stack(terms), dim=0)
        out.append(-(alpha[t_len - 1, u_len] + log_probs[b, t_len - 1, u_len, blank]))
    return torch.stack(out)


def reference_loss(logits, targets, logit_lens, target_lens, *, blank=0, reduction="mean"):
    nll = reference_nll_from_log_probs(
        logits.log_softmax(-1), targets, logit_lens, target_lens, blank
    )
    if reduction == "none":
        return nll
    return nll.sum() if reduction == "sum" else nll.mean()


def make_case(
    seed: int,
    batch: int,
    max_t: int,
    max_u: int,
    vocab: int,
    *,
    dtype: torch.dtype = torch.float64,
    blank: int = 0,
    t_lens: list[int] | None = None,
    u_lens: list[int] | None = None,
    scale: float = 1.0,
):
    """Random logits with garbage in the padding; lengths random unless given."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, max_t, max_u + 1, vocab, generator=g, dtype=dtype) * scale
    if t_lens is None:
        t_lens = torch.randint(1, max_t + 1, (batch,), generator=g).tolist()
        t_lens[0] = max_t
    if u_lens is None:
        u_lens = torch.randint(0, max_u + 1, (batch,), generator=g).tolist()
        u_lens[-1] = max_u
    non_blank = [v for v in range(vocab) if v != blank]
    idx = torch.randint(0, len(non_blank), (batch, max_u), generator=g)
    targets = torch.tensor(non_blank)[idx]
    for b in range(batch):
        # padding is arbitrary: huge logits and even the blank id in padded targets
        logits[b, t_lens[b] :] = 1e4
        logits[b, :, u_lens[b] + 1 :] = -1e4
        targets[b, u_lens[b] :] = blank
    return logits, targets, torch.tensor(t_lens), torch.tensor(u_lens)


def grad_of(fn, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.detach().clone().requires_grad_(True)
    loss = fn(x)
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).view(loss.shape)
    (grad,) = torch.autograd.grad((loss * weights).sum(), x)
    return loss.detach(), grad


CASES = [
    # seed, B, T, U, V, blank, t_lens, u_lens
    (0, 3, 5, 4, 6, 0, None, None),
    (1, 2, 1, 3, 5, 0, [1, 1], [3, 2]),  # T = 1
    (2, 2, 4, 0, 4, 0, [4, 2], [0, 0]),  # U = 0
    (3, 1, 1, 0, 3, 0, [1], [0]),  # T = 1 and U = 0
    (4, 4, 6, 5, 7, 3, None, None),  # blank not at 0, uneven lengths
    (5, 3, 3, 6, 5, 0, [3, 1, 2], [6, 0, 2]),  # U > T
]


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(("seed", "B", "T", "U", "V", "blank", "t_lens", "u_lens"), CASES)
def test_matches_autograd_reference(reduction, seed, B, T, U, V, blank, t_lens, u_lens):
    logits, targets, tl, ul = make_case(seed, B, T, U, V, blank=blank, t_lens=t_lens, u_lens=u_lens)
    ours, g_ours = grad_of(
        lambda x: rnnt_loss(x, targets, tl, ul, blank=blank, reduction=reduction), logits
    )
    ref, g_ref = grad_of(
        lambda x: reference_loss(x, targets, tl, ul, blank=blank, reduction=reduction), logits
    )
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("seed", range(20, 32))
def test_random_shapes_match_reference(seed):
    g = torch.Generator().manual_seed(seed)
    B, T, U = (int(torch.randint(1, n, (1,), generator=g)) for n in (5, 7, 6))
    V = int(torch.randint(2, 9, (1,), generator=g))  # V = 2: the blank and a single label
    blank = int(torch.randint(0, V, (1,), generator=g))
    logits, targets, tl, ul = make_case(seed, B, T, U - 1, V, blank=blank)
    ours, g_ours = grad_of(
        lambda x: rnnt_loss(x, targets, tl, ul, blank=blank, reduction="none"), logits
    )
    ref, g_ref = grad_of(
        lambda x: reference_loss(x, targets, tl, ul, blank=blank, reduction="none"), logits
    )
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("chunk", [None, 20], ids=["whole-batch", "chunked"])
@pytest.mark.parametrize(("seed", "B", "T", "U", "V", "blank", "t_lens", "u_lens"), CASES)
def test_padding_gets_zero_gradient_and_is_ignored(
    monkeypatch, chunk, seed, B, T, U, V, blank, t_lens, u_lens
):
    if chunk is not None:
        monkeypatch.setattr(rnnt_module, "_CHUNK_ELEMENTS", chunk)
        monkeypatch.setattr(rnnt_module, "_backward_chunk", lambda logits, t_lens: chunk)
    logits, targets, tl, ul = make_case(seed, B, T, U, V, blank=blank, t_lens=t_lens, u_lens=u_lens)
    loss, grad = grad_of(
        lambda x: rnnt_loss(x, targets, tl, ul, blank=blank, reduction="none"), logits
    )
    other = logits.clone()
    for b in range(B):
        other[b, tl[b] :] = float("nan")
        other[b, :, ul[b] + 1 :] = float("inf")
    loss2, grad2 = grad_of(
        lambda x: rnnt_loss(x, targets, tl, ul, blank=blank, reduction="none"), other
    )
    torch.testing.assert_close(loss, loss2, rtol=0, atol=0)
    torch.testing.assert_close(grad, grad2, rtol=0, atol=0)
    for b in range(B):
        assert torch.all(grad[b, tl[b] :] == 0)
        assert torch.all(grad[b, :, ul[b] + 1 :] == 0)


def warp_loss(logits, targets, tl, ul, *, blank, reduction, fastemit_lambda=0.0):
    # warprnnt-numba takes raw activations on CPU (log_softmax is applied inside) and int32
    fn = RNNTLossNumba(blank=blank, reduction=reduction, fastemit_lambda=fastemit_lambda)
    out = fn(logits, targets.int(), tl.int(), ul.int())
    return out.reshape(()) if reduction != "none" else out


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(
    ("seed", "B", "T", "U", "V", "blank", "t_lens", "u_lens"),
    [CASES[0], CASES[1], CASES[2], CASES[4]],
)
def test_matches_warprnnt_numba(reduction, seed, B, T, U, V, blank, t_lens, u_lens):
    logits, targets, tl, ul = make_case(
        seed, B, T, U, V, dtype=torch.float32, blank=blank, t_lens=t_lens, u_lens=u_lens
    )
    # warprnnt-numba does not mask padding logits before its log_softmax: give it finite ones
    logits = logits.clamp(-30, 30)
    ours, g_ours = grad_of(
        lambda x: rnnt_loss(x, targets, tl, ul, blank=blank, reduction=reduction), logits
    )
    warp, g_warp = grad_of(
        lambda x: warp_loss(x, targets, tl, ul, blank=blank, reduction=reduction), logits
    )
    torch.testing.assert_close(ours, warp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_ours, g_warp, rtol=1e-4, atol=1e-6)


def test_gradcheck_float64():
    logits, targets, tl, ul = make_case(7, 2, 3, 2, 4, t_lens=[3, 2], u_lens=[2, 1])
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, targets, tl, ul, reduction="none"), (logits,)
    )


def test_float32_close_to_float64_with_large_logits():
    logits, targets, tl, ul = make_case(8, 3, 30, 12, 20, scale=20.0)
    l64, g64 = grad_of(lambda x: rnnt_loss(x, targets, tl, ul, reduction="none"), logits)
    l32, g32 = grad_of(lambda x: rnnt_loss(x, targets, tl, ul, reduction="none"), logits.float())
    assert l32.dtype == torch.float32 and g32.dtype == torch.float32
    assert torch.isfinite(l32).all() and torch.isfinite(g32).all()
    torch.testing.assert_close(l32.double(), l64, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-3, atol=1e-4)


def test_small_chunks_take_the_same_path(monkeypatch):
    """Whole batch at once (default for small logits), groups of utterances, frames of one
    utterance, or parts of a frame row (chunks smaller than one (U+1, V) row): the results
    must not change."""
    logits, targets, tl, ul = make_case(9, 3, 6, 5, 7)
    expected = grad_of(lambda x: rnnt_loss(x, targets, tl, ul, reduction="sum"), logits)
    for chunk in (3, 7, 20, 50, 300, 600):
        monkeypatch.setattr(rnnt_module, "_CHUNK_ELEMENTS", chunk)
        monkeypatch.setattr(rnnt_module, "_backward_chunk", lambda logits, t_lens, c=chunk: c)
        got = grad_of(lambda x: rnnt_loss(x, targets, tl, ul, reduction="sum"), logits)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_backward_piece_size():
    logits = torch.zeros(4, 10, 3, 5)
    whole, one_utterance = logits.numel(), logits[0].numel()
    assert rnnt_module._backward_chunk(logits, [10, 10, 9, 8]) == whole
    assert rnnt_module._backward_chunk(logits, [10, 2, 3, 4]) == one_utterance  # much padding
    strided = logits.transpose(0, 1).contiguous().transpose(0, 1)
    assert rnnt_module._backward_chunk(strided, [10] * 4) == rnnt_module._CHUNK_ELEMENTS


def test_non_contiguous_logits_and_int32_lengths():
    logits, targets, tl, ul = make_case(10, 3, 4, 3, 5)
    expected = grad_of(lambda x: rnnt_loss(x, targets, tl, ul), logits)
    strided = logits.transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided.is_contiguous()
    got = grad_of(lambda x: rnnt_loss(x, targets.int(), tl.int(), ul.int()), strided)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_no_grad_forward_and_reduction_shapes():
    logits, targets, tl, ul = make_case(11, 3, 4, 3, 5, dtype=torch.float32)
    with torch.no_grad():
        none = rnnt_loss(logits, targets, tl, ul, reduction="none")
        total = rnnt_loss(logits, targets, tl, ul, reduction="sum")
        mean = rnnt_loss(logits, targets, tl, ul)
    assert none.shape == (3,) and total.shape == () and mean.shape == ()
    assert none.dtype == total.dtype == mean.dtype == torch.float32
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(mean, none.mean())
    assert torch.all(none > 0)


# ---------------------------------------------------------------------------------------------
# FastEmit


def fastemit_expected_grad(logits, targets, tl, ul, lam, blank=0):
    """Paper's FastEmit gradient: label-emission log-prob gradients ×(1+λ), then log-softmax."""
    log_probs = logits.log_softmax(-1).detach().requires_grad_(True)
    nll = reference_nll_from_log_probs(log_probs, targets, tl, ul, blank)
    (g,) = torch.autograd.grad(nll.sum(), log_probs)
    # d nll / d log_probs is -occupancy at the blank and the next-label entries, 0 elsewhere
    label_mask = torch.zeros_like(g, dtype=torch.bool)
    for b in range(logits.shape[0]):
        for u in range(int(ul[b])):
            label_mask[b, : int(tl[b]), u, targets[b, u]] = True
    g = torch.where(label_mask, g * (1.0 + lam), g)
    probs = logits.softmax(-1)
    return g - probs * g.sum(-1, keepdim=True)


def test_fastemit_zero_equals_plain():
    logits, targets, tl, ul = make_case(12, 3, 5, 4, 6)
    plain = grad_of(lambda x: rnnt_loss(x, targets, tl, ul), logits)
    zero = grad_of(lambda x: rnnt_loss(x, targets, tl, ul, fastemit_lambda=0.0), logits)
    torch.testing.assert_close(zero, plain, rtol=0, atol=0)


@pytest.mark.parametrize("lam", [0.01, 0.5, 2.0])
def test_fastemit_scales_label_emission_gradient(lam):
    logits, targets, tl, ul = make_case(13, 3, 5, 4, 6)
    plain_loss, plain_grad = grad_of(
        lambda x: rnnt_loss(x, targets, tl, ul, reduction="none"), logits
    )
    x = logits.clone().requires_grad_(True)
    loss = rnnt_loss(x, targets, tl, ul, reduction="sum", fastemit_lambda=lam)
    (grad,) = torch.autograd.grad(loss, x)
    # the value is the plain NLL; only the gradient changes
    torch.testing.assert_close(loss.detach(), plain_loss.sum(), rtol=0, atol=0)
    expected = fastemit_expected_grad(logits, targets, tl, ul, lam)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-10)
    assert (grad - plain_grad).abs().max() > 1e-3 * lam
    # per node, the FastEmit gradient still sums to zero over V (log-softmax invariance)
    torch.testing.assert_close(grad.sum(-1), torch.zeros_like(grad.sum(-1)), rtol=0, atol=1e-9)


def test_fastemit_matches_warprnnt_numba():
    lam = 0.3
    logits, targets, tl, ul = make_case(14, 3, 5, 3, 6, dtype=torch.float32)
    logits = logits.clamp(-30, 30)
    ours, g_ours = grad_of(
        lambda x: rnnt_loss(x, targets, tl, ul, reduction="none", fastemit_lambda=lam), logits
    )
    warp, g_warp = grad_of(
        lambda x: warp_loss(x, targets, tl, ul, blank=0, reduction="none", fastemit_lambda=lam),
        logits,
    )
    # warprnnt-numba reports (1 + λ)·NLL as the value; the gradients are the same
    torch.testing.assert_close(ours * (1 + lam), warp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_ours, g_warp, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# clamp


def test_clamp_clips_each_utterance_gradient_before_reduction():
    logits, targets, tl, ul = make_case(15, 3, 4, 3, 5, scale=3.0)
    x = logits.clone().requires_grad_(True)
    (per_utt,) = torch.autograd.grad(rnnt_loss(x, targets, tl, ul, reduction="sum"), x)
    (grad,) = torch.autograd.grad(rnnt_loss(x, targets, tl, ul, clamp=0.1) * 2.0, x)
    assert per_utt.abs().max() > 0.1  # the clip is active
    torch.testing.assert_close(grad, per_utt.clamp(-0.1, 0.1) * 2.0 / 3, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# bad input


def _good():
    return make_case(16, 2, 4, 3, 5, dtype=torch.float32, t_lens=[4, 2], u_lens=[3, 1])


def _fill(column: int, value: int):
    return lambda y: y.index_fill(1, torch.tensor([column]), value)


# (case, {argument: change}, part of the expected message); the good case is _good()
BAD_INPUTS = [
    ("3-D logits", {"logits": lambda x: x[0]}, "4-D"),
    ("int logits", {"logits": lambda x: x.long()}, "float32 or float64"),
    ("half logits", {"logits": lambda x: x.half()}, "float32 or float64"),
    ("float targets", {"targets": lambda y: y.float()}, "targets must have an integer"),
    ("U mismatch", {"targets": lambda y: y[:, :2]}, "targets.shape[1] + 1"),
    ("batch mismatch", {"logit_lens": lambda t: t[:1]}, "logit_lens has batch size 1"),
    ("2-D lengths", {"target_lens": lambda u: u.view(2, 1)}, "target_lens must be 1-D"),
    ("T too long", {"logit_lens": lambda t: t + 1}, "logit_lens[0] = 5"),
    ("T zero", {"logit_lens": lambda t: t * 0}, "logit_lens[0] = 0"),
    ("U too long", {"target_lens": lambda u: u + 1}, "target_lens[0] = 4"),
    ("U negative", {"target_lens": lambda u: u - 2}, "target_lens[1] = -1"),
    ("blank in targets", {"targets": _fill(0, 0)}, "targets[0, 0] is the blank"),
    ("target >= V", {"targets": _fill(1, 5)}, "targets[0, 1] = 5"),
    ("blank >= V", {"blank": 5}, "blank id 5"),
    ("reduction", {"reduction": "avg"}, "'avg'"),
    ("lambda < 0", {"fastemit_lambda": -0.1}, "fastemit_lambda"),
    ("clamp 0", {"clamp": 0.0}, "clamp"),
]


@pytest.mark.parametrize(("case", "changes", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_value_error_naming_the_problem(case, changes, message):
    logits, targets, tl, ul = _good()
    rnnt_loss(logits, targets, tl, ul)  # the unmodified case is fine
    args = {"logits": logits, "targets": targets, "logit_lens": tl, "target_lens": ul}
    kwargs = {}
    for name, change in changes.items():
        if name in args:
            args[name] = change(args[name])
        else:
            kwargs[name] = change
    with pytest.raises(ValueError) as info:
        rnnt_loss(*args.values(), **kwargs)
    assert isinstance(info.value, InputDataError)
    assert message in str(info.value), (case, str(info.value))


def test_padded_targets_may_hold_anything():
    logits, targets, tl, ul = _good()
    expected = rnnt_loss(logits, targets, tl, ul, reduction="none")
    targets = targets.clone()
    targets[1, 1:] = -7  # beyond target_lens[1] = 1
    torch.testing.assert_close(rnnt_loss(logits, targets, tl, ul, reduction="none"), expected)


# ---------------------------------------------------------------------------------------------
# memory: the full log-softmax is never materialized; backward allocates one logits-sized buffer


class _StorageRecorder(TorchDispatchMode):
    """Records the size in bytes of every new storage an aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                self.seen.setdefault(storage.data_ptr(), storage.nbytes())
        return out

    def large(self, nbytes: int, exclude: torch.Tensor) -> list[int]:
        skip = exclude.untyped_storage().data_ptr()
        return [n for ptr, n in self.seen.items() if n >= nbytes and ptr != skip]


def test_forward_never_materializes_logits_sized_tensors(monkeypatch):
    logits, targets, tl, ul = make_case(17, 8, 12, 6, 40, dtype=torch.float32)
    logits.requires_grad_(True)
    full = logits.numel() * logits.element_size()
    # what happens to large logits: forward pieces of at most a quarter of them
    monkeypatch.setattr(rnnt_module, "_CHUNK_ELEMENTS", logits.numel() // 4)

    with _StorageRecorder() as rec:
        logits.log_softmax(-1)
    assert rec.large(full // 3, logits), "the recorder must see a materialized log-softmax"

    with _StorageRecorder() as rec:
        loss = rnnt_loss(logits, targets, tl, ul)
    assert rec.large(full // 3, logits) == []  # the scratch holds a quarter of the logits
    with _StorageRecorder() as rec:
        loss.backward()
    assert rec.large(full // 3, logits) == [full]  # the gradient, and nothing else that size


@pytest.mark.parametrize(("seed", "B", "T", "U", "V", "blank", "t_lens", "u_lens"), CASES)
def test_label_bias_matches_the_autograd_reference_of_the_biased_lattice(
        seed, B, T, U, V, blank, t_lens, u_lens):
    """The bias is added to log p(y_{u+1} | t, u) before the recursions; the gradient with
    respect to the logits is autograd's through the biased log-probabilities."""
    logits, targets, tl, ul = make_case(seed, B, T, U, V, blank=blank, t_lens=t_lens, u_lens=u_lens)
    bias = -torch.rand(B, T, U, generator=torch.Generator().manual_seed(seed + 100),
                       dtype=torch.float64) * 3

    def reference(x):
        lp = x.log_softmax(-1)
        index = targets.clamp_min(0).unsqueeze(1).unsqueeze(-1).expand(-1, T, -1, -1)
        extra = torch.zeros_like(lp)
        inside = (torch.arange(U).unsqueeze(0) < ul.unsqueeze(1)).unsqueeze(1)  # (B, 1, U)
        extra[:, :, :-1].scatter_(3, index, (bias * inside).unsqueeze(-1))
        return reference_nll_from_log_probs(lp + extra, targets, tl, ul, blank)

    ours, g_ours = grad_of(
        lambda x: rnnt_loss(x, targets, tl, ul, blank=blank, reduction="none",
                            label_bias=bias), logits)
    ref, g_ref = grad_of(reference, logits)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-10)
    if U:
        plain = rnnt_loss(logits, targets, tl, ul, blank=blank, reduction="none")
        assert bool((ours >= plain - 1e-12).all())  # a negative bias only lowers P


def test_label_bias_of_the_wrong_shape_or_not_finite_is_named():
    logits, targets, tl, ul = make_case(0, 2, 4, 3, 5)
    with pytest.raises(ValueError, match=r"label_bias must be \(B, T, U\) = \(2, 4, 3\)"):
        rnnt_loss(logits, targets, tl, ul, label_bias=torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="non-finite"):
        rnnt_loss(logits, targets, tl, ul, label_bias=torch.full((2, 4, 3), float("nan")))
