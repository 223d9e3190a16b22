"""Training config: YAML + overrides → nested frozen dataclasses, strict keys and types."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fairstream.errors import InputDataError
from fairstream.training.config import (
    OptimConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    config_to_json,
    load_config,
    save_config,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_and_nesting():
    cfg = load_config(None)
    assert isinstance(cfg, TrainConfig)
    assert cfg.optim == OptimConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


def test_yaml_values_and_overrides_are_coerced(tmp_path):
    path = _write(tmp_path, """
optim:
  lr: 1e-3            # YAML reads this as a string; the float field takes it
  betas: [0.9, 0.99]
schedule:
  max_steps: 100
data:
  max_duration: 120
spec_augment: null
""")
    cfg = load_config(path, ["optim.warmup_steps=50", "schedule.budget_minutes=2.5",
                             "model.encoder.kwargs.hidden_dim=64", "seed=7"])
    assert cfg.optim.lr == 1e-3 and cfg.optim.betas == (0.9, 0.99)
    assert cfg.optim.warmup_steps == 50 and cfg.schedule.budget_minutes == 2.5
    assert cfg.data.max_duration == 120.0 and isinstance(cfg.data.max_duration, float)
    assert cfg.spec_augment is None
    assert cfg.model.encoder.kwargs["hidden_dim"] == 64
    assert cfg.seed == 7


@pytest.mark.parametrize(
    ("text", "overrides", "match"),
    [
        ("optim:\n  lrr: 0.1\n", [], r"unknown config key optim\.lrr"),
        ("", ["schedule.max_stepz=3"], r"unknown config key schedule\.max_stepz"),
        ("bogus: 1\n", [], r"unknown config key bogus"),
        ("model:\n  predictor:\n    kindd: lstm\n", [], r"model\.predictor\.kindd"),
        ("optim:\n  lr: fast\n", [], r"optim\.lr: expected float, got 'fast'"),
        ("optim:\n  schedule: linear\n", [], r"optim\.schedule: 'linear' is not one of"),
        ("optim:\n  betas: [0.9]\n", [], r"optim\.betas: expected 2 values"),
        ("schedule:\n  max_epochs: 2.5\n", [], r"schedule\.max_epochs: expected int"),
        ("tokenizer: 3\n", [], r"tokenizer: expected a mapping"),
        ("", ["optim.lr"], r"not of the form key\.path=value"),
        ("seed: 3\n", ["seed.x=1"], r"seed is a value, not a section"),
        ("", ["seed.x=1"], r"config key seed: expected int"),
        ("model:\n  encoder:\n    kwargs: {no_such_option: 1}\n", [], r"no_such_option"),
        ("model:\n  encoder:\n    kwargs: {hiden_dim: 64}\n", [],
         (r"unknown config key model\.encoder\.kwargs\.hiden_dim \(known keys of "
          r"model\.encoder\.kwargs: conv_channels, dropout, hidden_dim, ")),
        ("", ["model.encoder.kwargs.num_layers=two"],
         r"config key model\.encoder\.kwargs\.num_layers: expected int, got 'two'"),
        ("", ["model.encoder.kwargs.dropout=[0.1]"],
         r"config key model\.encoder\.kwargs\.dropout: expected float, got \[0\.1\]"),
        ("", ["model.encoder.kwargs.subsampling=3"],
         r"config key model\.encoder\.kwargs: subsampling must be 2, 4 or 8, got 3"),
        ("", ["model.encoder.name=gru"], r"config key model\.encoder\.name: unknown encoder 'gru'"),
        ("", ["model.vocab_size=1"], r"config key model\.vocab_size: must be >= 2"),
        ("- a\n- b\n", [], r"mapping at the top level"),
        ("optim: [1\n", [], r"not valid YAML"),
        ("", ["decode.lm_order=1"], r"decode\.lm_order must be 0 \(no LM\) or >= 2, got 1"),
        ("", ["decode.beam=0"], r"decode\.beam and decode\.max_symbols_per_frame must be >= 1"),
        ("decode:\n  method: viterbi\n", [], r"decode\.method: 'viterbi' is not one of"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, overrides, match):
    with pytest.raises(InputDataError, match=match):
        load_config(_write(tmp_path, text), overrides)


def test_round_trip_through_dict_json_and_yaml(tmp_path):
    cfg = load_config(None, ["optim.lr=0.002", "tokenizer.kind=char", "data.corpus=/data/x"])
    plain = config_to_dict(cfg)
    json.dumps(plain)  # plain data only
    assert plain["optim"]["betas"] == [0.9, 0.98]
    assert config_from_dict(plain) == config_from_dict(json.loads(config_to_json(cfg)))
    # the stored model section has the encoder options resolved (defaults filled in)
    assert plain["model"]["encoder"]["kwargs"]
    again = load_config(save_config(cfg, tmp_path / "resolved.yaml"))
    assert config_to_dict(again) == plain


def test_encoder_options_are_typed_and_stored_resolved():
    from fairstream.models.encoders.lstm import LSTMEncoderOptions

    cfg = load_config(None, ["model.encoder.kwargs.dropout=0",
                             "model.encoder.kwargs.subsampling=8"])
    assert cfg.model.encoder.kwargs == {"dropout": 0.0, "subsampling": 8}
    assert cfg.model.encoder.options() == LSTMEncoderOptions(dropout=0.0, subsampling=8)
    stored = config_to_dict(cfg)["model"]["encoder"]["kwargs"]
    assert stored == dataclasses.asdict(LSTMEncoderOptions(dropout=0.0, subsampling=8))


def test_golden_checkpoint_config_loads_unchanged():
    """The config stored in a checkpoint of an earlier release parses, and its model section
    comes back as stored."""
    import torch

    golden = Path(__file__).parent / "data" / "golden" / "tiny_transducer.pt"
    stored = json.loads(torch.load(golden, map_location="cpu", weights_only=True)["config"])
    cfg = config_from_dict(stored)
    assert cfg.model.encoder.kwargs == stored["model"]["encoder"]["kwargs"]
    assert config_to_dict(cfg)["model"] == stored["model"]


def test_overrides_do_not_mutate_their_input():
    base = {"optim": {"lr": 1.0}}
    out = apply_overrides(base, ["optim.lr=2", "schedule.max_steps=null"])
    assert base == {"optim": {"lr": 1.0}}
    assert out == {"optim": {"lr": 2}, "schedule": {"max_steps": None}}


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(recipe):
    cfg = load_config(recipe)
    assert cfg.schedule.budget_minutes is None or cfg.schedule.budget_minutes > 0
    if recipe.name == "lstm_transducer.yaml":  # the demo recipe decodes with beam search + LM
        assert cfg.decode.method == "beam" and cfg.decode.lm_order == 6
