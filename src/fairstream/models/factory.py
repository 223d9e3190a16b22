"""Model configuration (nested frozen dataclasses) and :func:`build_model`.

The defaults are the streaming baseline: causal conv subsampling 4x, 3 x 320 LSTM encoder,
stateless predictor (k = 2), joint dim 320, auxiliary CTC head (weight 0.2); about 3.2 M
parameters at V = 256.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from torch import nn

from fairstream.errors import InputDataError
from fairstream.models.encoders import ENCODERS
from fairstream.models.joiner import Joiner
from fairstream.models.predictor import LSTMPredictor, StatelessPredictor
from fairstream.models.transducer import Transducer

__all__ = [
    "EncoderConfig",
    "JoinerConfig",
    "ModelConfig",
    "PredictorConfig",
    "build_model",
    "encoder_options",
    "model_config_from_dict",
    "model_config_to_dict",
]


@dataclass(frozen=True)
class EncoderConfig:
    """Which registered encoder to build and its keyword options.

    Attributes:
        name: Key in :data:`fairstream.models.encoders.ENCODERS` (``"lstm"``, ...).
        kwargs: Keyword options of that encoder's constructor (unset ones take its defaults).
    """

    name: str = "lstm"
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictorConfig:
    """Predictor settings.

    Attributes:
        kind: ``"stateless"`` (embedding + conv over the last ``context_size`` tokens) or ``"lstm"``.
        embed_dim: Embedding size (the output size of the stateless predictor).
        context_size: Tokens of history of the stateless predictor.
        hidden_dim: LSTM size (``kind="lstm"`` only; its output size).
        num_layers: LSTM layers (``kind="lstm"`` only).
        dropout: Training dropout.
    """

    kind: Literal["stateless", "lstm"] = "stateless"
    embed_dim: int = 256
    context_size: int = 2
    hidden_dim: int = 320
    num_layers: int = 1
    dropout: float = 0.1


@dataclass(frozen=True)
class JoinerConfig:
    """Joiner settings: hidden size and nonlinearity."""

    joint_dim: int = 320
    activation: Literal["tanh", "relu"] = "tanh"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a transducer.

    Attributes:
        encoder: Encoder name and options.
        predictor: Predictor settings.
        joiner: Joiner settings.
        vocab_size: V including blank; must equal the tokenizer's ``vocab_size``.
        feature_dim: Input feature size.
        blank_id: Blank id.
        ctc_weight: Weight of the auxiliary CTC loss (0 = no CTC head).
        fastemit_lambda: FastEmit regularization of the RNN-T loss.
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    joiner: JoinerConfig = field(default_factory=JoinerConfig)
    vocab_size: int = 256
    feature_dim: int = 80
    blank_id: int = 0
    ctc_weight: float = 0.2
    fastemit_lambda: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (see :func:`model_config_to_dict`)."""
        return model_config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Parse a mapping (see :func:`model_config_from_dict`)."""
        return model_config_from_dict(data)


def encoder_options(name: str) -> dict[str, Any]:
    """Keyword options (with defaults) accepted by the encoder registered as ``name``.

    Raises:
        InputDataError: if ``name`` is not registered.
    """
    if name not in ENCODERS:
        raise InputDataError(f"unknown encoder {name!r}; registered encoders: {sorted(ENCODERS)}")
    params = inspect.signature(ENCODERS[name].__init__).parameters
    return {
        p.name: p.default
        for p in params.values()
        if p.name not in ("self", "input_dim")
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def _resolved_encoder_kwargs(enc: EncoderConfig) -> dict[str, Any]:
    options = encoder_options(enc.name)
    unknown = sorted(set(enc.kwargs) - set(options))
    if unknown:
        raise InputDataError(
            f"unknown option(s) {unknown} for encoder {enc.name!r}; known: {sorted(options)}"
        )
    return {**options, **dict(enc.kwargs)}


def _validate(config: ModelConfig) -> None:
    if config.vocab_size < 2:
        raise InputDataError(f"vocab_size must be >= 2, got {config.vocab_size}")
    if not 0 <= config.blank_id < config.vocab_size:
        raise InputDataError(f"blank_id {config.blank_id} outside [0, {config.vocab_size})")
    if config.predictor.kind not in ("stateless", "lstm"):
        raise InputDataError(
            f"predictor.kind must be 'stateless' or 'lstm', got {config.predictor.kind!r}"
        )
    if config.joiner.activation not in ("tanh", "relu"):
        raise InputDataError(
            f"joiner.activation must be 'tanh' or 'relu', got {config.joiner.activation!r}"
        )
    _resolved_encoder_kwargs(config.encoder)


def build_model(config: ModelConfig) -> Transducer:
    """Build the transducer described by ``config``.

    Raises:
        InputDataError: on an unknown encoder, unknown encoder option or invalid value.
    """
    _validate(config)
    encoder: nn.Module = ENCODERS[config.encoder.name](
        config.feature_dim, **dict(config.encoder.kwargs)
    )
    p = config.predictor
    predictor: StatelessPredictor | LSTMPredictor
    if p.kind == "stateless":
        predictor = StatelessPredictor(
            config.vocab_size,
            p.embed_dim,
            context_size=p.context_size,
            blank_id=config.blank_id,
            dropout=p.dropout,
        )
    else:
        predictor = LSTMPredictor(
            config.vocab_size,
            p.embed_dim,
            p.hidden_dim,
            num_layers=p.num_layers,
            blank_id=config.blank_id,
            dropout=p.dropout,
        )
    joiner = Joiner(
        cast(int, encoder.output_dim),
        predictor.output_dim,
        config.joiner.joint_dim,
        config.vocab_size,
        activation=config.joiner.activation,
    )
    return Transducer(
        encoder,
        predictor,
        joiner,
        blank_id=config.blank_id,
        ctc_weight=config.ctc_weight,
        fastemit_lambda=config.fastemit_lambda,
    )


def _from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise InputDataError(
            f"{where or 'model config'} must be a mapping, got {type(data).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputDataError(
            f"unknown key(s) {unknown} in {where or 'model config'}; known: {sorted(fields)}"
        )
    values: dict[str, Any] = {}
    for name, value in data.items():
        sub = {"encoder": EncoderConfig, "predictor": PredictorConfig, "joiner": JoinerConfig}
        if cls is ModelConfig and name in sub:
            values[name] = _from_dict(sub[name], value, f"{where}{name}.")
        elif cls is EncoderConfig and name == "kwargs":
            if not isinstance(value, Mapping):
                raise InputDataError(f"{where}kwargs must be a mapping, got {value!r}")
            values[name] = dict(value)
        else:
            values[name] = value
    return cls(**values)


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Parse a (YAML/JSON) mapping into a :class:`ModelConfig`.

    Raises:
        InputDataError: on unknown keys (at any level, including encoder options) or
            invalid values; the message names the key.
    """
    config = _from_dict(ModelConfig, data, "")
    _validate(config)
    return config


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """Plain-dict form with the encoder options resolved (defaults filled in)."""
    out = dataclasses.asdict(config)
    out["encoder"]["kwargs"] = _resolved_encoder_kwargs(config.encoder)
    return out
