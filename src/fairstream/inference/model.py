"""Load a trained transducer (weights, tokenizer, feature normalization) for inference."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairstream.checkpoint import Checkpoint, load_checkpoint
from fairstream.errors import CheckpointError, InputDataError
from fairstream.features.fbank import Cmvn
from fairstream.models.transducer import Transducer
from fairstream.tokenizer import Tokenizer

__all__ = ["LoadedModel", "load_transducer"]


@dataclass(frozen=True)
class LoadedModel:
    """A transducer checkpoint ready for inference.

    Attributes:
        model: the transducer, in eval mode.
        tokenizer: its tokenizer (vocabulary checked against the model).
        cmvn: the feature normalization used in training.
        config: the resolved training config (plain data; its ``decode`` section is the
            recipe's search, see :func:`fairstream.inference.recipe_search`).
        path: the checkpoint file.
    """

    model: Transducer
    tokenizer: Tokenizer
    cmvn: Cmvn
    config: dict[str, Any]  # Any: plain JSON data of any shape, as stored
    path: Path


def stored_tokenizer(ck: Checkpoint) -> Tokenizer:
    """The tokenizer a training checkpoint stores (``extra["tokenizer_files"]``).

    Raises:
        CheckpointError: no stored tokenizer, or one that does not load (named).
    """
    files = ck.extra.get("tokenizer_files")
    if not files:
        raise CheckpointError(f"{ck.path} stores no tokenizer")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            Path(tmp, Path(name).name).write_bytes(bytes(data.numpy().tobytes()))
        try:
            return Tokenizer.load(tmp)
        except InputDataError as exc:
            raise CheckpointError(f"{ck.path}: stored tokenizer is unusable: {exc}") from exc


def load_transducer(path: str | os.PathLike[str]) -> LoadedModel:
    """Rebuild the model, tokenizer and CMVN stored in a training checkpoint.

    Raises:
        CheckpointError: the file is corrupt, is not a transducer checkpoint, its weights do
            not fit its config, or its tokenizer and model vocabularies differ.
    """
    from fairstream.models.factory import build_model, model_config_from_dict

    ck = load_checkpoint(Path(path))
    files = ck.extra.get("tokenizer_files")
    if ck.kind != "transducer" or not files or "cmvn_mean" not in ck.extra:
        raise CheckpointError(
            f"{ck.path} is not a transducer checkpoint written by `fairstream train` "
            f"(kind {ck.kind!r}; tokenizer or CMVN missing)"
        )
    try:
        model_cfg = model_config_from_dict(ck.config["model"])
    except (KeyError, InputDataError) as exc:
        raise CheckpointError(f"{ck.path}: stored model config is unusable: {exc}") from exc
    tokenizer = stored_tokenizer(ck)
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise CheckpointError(
            f"{ck.path}: tokenizer vocabulary ({tokenizer.vocab_size}) does not match the "
            f"model's vocab_size ({model_cfg.vocab_size})"
        )
    model = build_model(model_cfg)
    try:
        model.load_state_dict(ck.model)
    except RuntimeError as exc:
        raise CheckpointError(f"{ck.path}: weights do not fit the stored config: "
                              f"{str(exc).splitlines()[0]}") from exc
    model.eval()
    cmvn = Cmvn(mean=ck.extra["cmvn_mean"].numpy(), std=ck.extra["cmvn_std"].numpy())
    return LoadedModel(model=model, tokenizer=tokenizer, cmvn=cmvn, config=ck.config,
                       path=ck.path)
