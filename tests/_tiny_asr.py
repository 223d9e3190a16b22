"""A tiny transducer configuration, and a tiny model trained once per test session.

The corpus is the ``tiny_corpus`` fixture of tests/conftest.py (the ``tiny`` preset).
"""

from __future__ import annotations

from pathlib import Path

_CACHE: dict[str, Path] = {}


TINY_OVERRIDES = [
    "tokenizer.kind=char",
    "model.encoder.kwargs.hidden_dim=64",
    "model.encoder.kwargs.output_dim=64",
    "model.encoder.kwargs.num_layers=1",
    "model.encoder.kwargs.conv_channels=8",
    "model.encoder.kwargs.dropout=0.0",
    "model.predictor.embed_dim=32",
    "model.predictor.dropout=0.0",
    "model.joiner.joint_dim=64",
    "model.ctc_weight=0.2",
    "data.max_duration=20",
    "data.max_valid_utterances=4",
    "optim.lr=0.003",
    "optim.warmup_steps=5",
    "optim.schedule=constant",
    "schedule.max_epochs=100",
    "schedule.log_interval=1",
    "schedule.checkpoint_interval=10",
    "schedule.average_last_n=2",
    "spec_augment=null",
]


def tiny_config(corpus: Path, *extra: str):  # type: ignore[no-untyped-def]
    """A TrainConfig for a model small enough to train in seconds."""
    from fairstream.training.config import load_config

    return load_config(None, [f"data.corpus={corpus}", *TINY_OVERRIDES, *extra])


def tiny_trained_model(corpus: Path, tmp_path_factory, steps: int = 2) -> Path:  # type: ignore[no-untyped-def]
    """Experiment directory of a tiny transducer trained ``steps`` steps (cached).

    Two steps leave the model close to its random start, where greedy search still emits
    plenty of (wrong) tokens: good for checking decoding plumbing, useless for accuracy.
    """
    if "exp" not in _CACHE:
        from fairstream.training.transducer import train

        out = tmp_path_factory.mktemp("tiny_exp")
        train(tiny_config(corpus, f"schedule.max_steps={steps}"), out_dir=out, progress=False)
        _CACHE["exp"] = out
    return _CACHE["exp"]
