"""Start from a trained model: load its weights into a grown model, grow its vocabulary.

Fine-tuning recipes reuse a checkpoint and add to it:

* new parameters (for example a cohort-input embedding): build the new model, then
  :func:`load_state_dict` copies every weight the checkpoint has and reports the parameters it
  did not have (they keep their fresh initialization);
* new output symbols (for example multi-talker turn tokens ``<sot>``, ``<eot>``): after loading,
  :func:`extend_vocabulary` adds them to the tokenizer and grows the model's token embedding and
  output rows; every old row is copied, so the logits of the old tokens do not change.

Example::

    ck = load_checkpoint("exp/base/averaged.pt")
    model = build_model(config.model)                 # the checkpoint's vocabulary size
    report = load_state_dict(model, ck.model, source=ck.path)
    tokenizer = extend_vocabulary(model, tokenizer, ["<sot>", "<eot>"])
    tokenizer.save(out_dir / "tokenizer")

``fairstream train --init CKPT`` (config key ``init``) does the loading part for a whole run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from fairstream.errors import CheckpointError, InputDataError
from fairstream.models.transducer import Transducer
from fairstream.tokenizer import Tokenizer

__all__ = ["LoadReport", "extend_vocabulary", "load_state_dict"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_state_dict` did.

    Attributes:
        loaded: parameter and buffer names copied from the state dict.
        missing: names the model has and the state dict lacks (new parameters; they keep
            the model's own initialization).
        unexpected: names the state dict has and the model lacks (ignored).
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def __str__(self) -> str:
        return (f"{len(self.loaded)} tensors loaded, {len(self.missing)} new "
                f"({', '.join(self.missing[:5]) or 'none'}), {len(self.unexpected)} ignored "
                f"({', '.join(self.unexpected[:5]) or 'none'})")


def load_state_dict(
    model: nn.Module,
    state: Mapping[str, Tensor],
    *,
    allow_missing: bool = True,
    allow_unexpected: bool = False,
    source: str | Path = "state dict",
) -> LoadReport:
    """Copy the weights of ``state`` into ``model``, allowing the model to have new parameters.

    Unlike ``nn.Module.load_state_dict(strict=True)``, parameters the model has and ``state``
    lacks are allowed (``allow_missing``) and reported; unlike ``strict=False``, a tensor of
    another shape is always an error.

    Args:
        model: the model to fill (changed in place).
        state: a ``state_dict`` (for example ``Checkpoint.model``).
        allow_missing: accept model parameters that ``state`` lacks.
        allow_unexpected: accept (and ignore) tensors of ``state`` the model lacks.
        source: where ``state`` came from, for messages.

    Returns:
        :class:`LoadReport`.

    Raises:
        CheckpointError: a shape mismatch, or missing/unexpected names that are not allowed;
            the message names the tensors.
    """
    own = model.state_dict()
    mismatched = [f"{k}: {tuple(v.shape)} in {source}, {tuple(own[k].shape)} in the model"
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise CheckpointError(
            f"{source} does not fit the model: {'; '.join(mismatched[:5])}"
            + (f" (and {len(mismatched) - 5} more)" if len(mismatched) > 5 else "")
            + " (a different architecture or vocabulary; grow a vocabulary after loading, "
            "with extend_vocabulary)"
        )
    report = LoadReport(
        loaded=tuple(k for k in own if k in state),
        missing=tuple(k for k in own if k not in state),
        unexpected=tuple(k for k in state if k not in own),
    )
    if report.missing and not allow_missing:
        raise CheckpointError(f"{source} lacks model tensors: {', '.join(report.missing[:8])}")
    if report.unexpected and not allow_unexpected:
        raise CheckpointError(
            f"{source} holds tensors the model does not have: "
            f"{', '.join(report.unexpected[:8])}"
        )
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    return report


def _grow_embedding(old: nn.Embedding, rows: int) -> nn.Embedding:
    new = nn.Embedding(old.num_embeddings + rows, old.embedding_dim,
                       device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        nn.init.normal_(new.weight, std=old.embedding_dim**-0.5)  # as the predictors do
        new.weight[: old.num_embeddings] = old.weight
    return new


def _grow_linear_out(old: nn.Linear, rows: int) -> nn.Linear:
    """``old`` with ``rows`` more outputs (PyTorch's default initialization for the new ones)."""
    new = nn.Linear(old.in_features, old.out_features + rows, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        if old.bias is not None and new.bias is not None:
            new.bias[: old.out_features] = old.bias
    return new


def extend_vocabulary(
    model: Transducer, tokenizer: Tokenizer, new_tokens: Sequence[str]
) -> Tokenizer:
    """Add special tokens to ``tokenizer`` and the matching rows to ``model``.

    The new tokens take ids ``V, V+1, ...`` (``V`` the old vocabulary size). The predictor's
    token embedding, the joiner's output layer and the CTC head (if any) grow by one row per
    token: old rows are copied, new embedding rows are drawn like the predictor's own
    initialization and new output rows like a fresh ``nn.Linear``. The logits of the old tokens
    are therefore unchanged for any input that uses only old tokens. Load the checkpoint's
    weights *before* extending (its tensors have the old vocabulary size), and save the
    returned tokenizer beside the new model (:meth:`Tokenizer.save`).

    Args:
        model: the transducer to grow (changed in place; new parameters need a new optimizer).
        tokenizer: the tokenizer ``model`` was trained with.
        new_tokens: special tokens such as ``["<sot>", "<eot>"]``.

    Returns:
        The extended tokenizer (``tokenizer`` itself is unchanged).

    Raises:
        InputDataError: a token that is malformed or already in the vocabulary, or a model
            whose vocabulary does not match the tokenizer's.
    """
    if model.vocab_size != tokenizer.vocab_size:
        raise InputDataError(
            f"the model has a vocabulary of {model.vocab_size}, the tokenizer "
            f"{tokenizer.vocab_size}; extend the tokenizer the model was trained with"
        )
    extended = tokenizer.with_special_tokens(new_tokens)
    rows = extended.vocab_size - tokenizer.vocab_size
    if rows == 0:
        return extended
    predictor = model.predictor
    predictor.embedding = _grow_embedding(predictor.embedding, rows)
    predictor.vocab_size = extended.vocab_size
    model.joiner.out = _grow_linear_out(model.joiner.out, rows)
    model.joiner.vocab_size = extended.vocab_size
    if model.ctc_head is not None:
        model.ctc_head = _grow_linear_out(model.ctc_head, rows)
    model.vocab_size = extended.vocab_size
    logger.info("vocabulary extended by %s to %d symbols", ", ".join(new_tokens),
                extended.vocab_size)
    return extended
