"""Model configuration (nested frozen dataclasses) and :func:`build_model`.

The defaults are the streaming baseline: causal conv subsampling 4x, 3 x 320 LSTM encoder,
stateless predictor (k = 2), joint dim 320, auxiliary CTC head (weight 0.2); about 3.2 M
parameters at V = 256.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from fairstream.config_parse import from_dict, join_path, to_dict
from fairstream.errors import InputDataError
from fairstream.models.encoders import ENCODER_OPTIONS, ENCODERS, StreamingEncoder, check_encoder
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
    """Which registered encoder to build and its options.

    Attributes:
        name: Key in :data:`fairstream.models.encoders.ENCODERS` (``"lstm"``, ...).
        kwargs: Values of fields of that encoder's options dataclass (registered with it in
            :data:`~fairstream.models.encoders.ENCODER_OPTIONS`); unset ones take its
            defaults. A config parsed by :func:`~fairstream.config_parse.from_dict` holds
            them checked and coerced to the fields' types.
    """

    name: str = "lstm"
    # Any: the value types depend on the encoder ``name`` selects (checked by options())
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    # Any: each encoder has its own options class
    def options(self, path: str = "model.encoder") -> Any:
        """The encoder's options dataclass built from ``kwargs`` (the rest at defaults).

        Returns ``Any``: each encoder has its own options class.

        Raises:
            InputDataError: on an unknown encoder, an unknown option or a bad value; the
                message names the key path under ``path``.
        """
        if self.name not in ENCODER_OPTIONS:
            raise InputDataError(
                f"config key {join_path(path, 'name')}: unknown encoder {self.name!r}; "
                f"registered encoders: {', '.join(sorted(ENCODER_OPTIONS))}"
            )
        return from_dict(ENCODER_OPTIONS[self.name], self.kwargs, path=join_path(path, "kwargs"))

    def config_checked(self, path: str) -> EncoderConfig:
        """Check the options against the encoder's options class; keep the given keys, with
        their values coerced to the fields' types."""
        opts = self.options(path)
        return dataclasses.replace(self, kwargs={k: getattr(opts, k) for k in self.kwargs})


@dataclass(frozen=True)
class PredictorConfig:
    """Predictor settings.

    Attributes:
        kind: ``"stateless"`` (embedding + conv over the last ``context_size`` tokens) or
            ``"lstm"``.
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

    def to_dict(self) -> dict[str, Any]:  # Any: plain JSON data
        """Plain-dict form (see :func:`model_config_to_dict`)."""
        return model_config_to_dict(self)

    @classmethod
    # Any: parsed YAML/JSON, checked against the types
    def from_dict(cls, data: Mapping[str, Any], *, path: str = "model") -> ModelConfig:
        """Parse a mapping (see :func:`model_config_from_dict`)."""
        return model_config_from_dict(data, path=path)

    def config_checked(self, path: str) -> ModelConfig:
        """Checks across fields (vocabulary, blank id) and of the encoder options."""
        _validate(self, path)
        return self


def encoder_options(name: str) -> dict[str, Any]:  # Any: option values of each encoder's own types
    """Options (with defaults) of the encoder registered as ``name``.

    Raises:
        InputDataError: if ``name`` is not registered.
    """
    return _resolved_encoder_kwargs(EncoderConfig(name))


# Any: option values of each encoder's own types
def _resolved_encoder_kwargs(enc: EncoderConfig, path: str = "model.encoder") -> dict[str, Any]:
    resolved: dict[str, Any] = to_dict(enc.options(path))  # Any: as above
    return resolved


def _validate(config: ModelConfig, path: str = "model") -> None:
    def bad(key: str, message: str) -> InputDataError:
        return InputDataError(f"config key {join_path(path, key)}: {message}")

    if config.vocab_size < 2:
        raise bad("vocab_size", f"must be >= 2, got {config.vocab_size}")
    if not 0 <= config.blank_id < config.vocab_size:
        raise bad("blank_id", f"{config.blank_id} outside [0, {config.vocab_size})")
    if config.predictor.kind not in ("stateless", "lstm"):
        raise bad("predictor.kind", f"must be 'stateless' or 'lstm', got {config.predictor.kind!r}")
    if config.joiner.activation not in ("tanh", "relu"):
        raise bad("joiner.activation",
                  f"must be 'tanh' or 'relu', got {config.joiner.activation!r}")
    config.encoder.options(join_path(path, "encoder"))


def build_model(config: ModelConfig) -> Transducer:
    """Build the transducer described by ``config``.

    Raises:
        InputDataError: on an unknown encoder, unknown encoder option or invalid value.
    """
    _validate(config)
    options = config.encoder.options()
    kwargs = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    module = ENCODERS[config.encoder.name](config.feature_dim, **kwargs)
    check_encoder(module)
    encoder = cast(StreamingEncoder[Any], module)  # Any: the state type is the encoder's own
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
        encoder.output_dim,
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


# Any: parsed YAML/JSON, checked against the types
def model_config_from_dict(data: Mapping[str, Any], *, path: str = "model") -> ModelConfig:
    """Parse a (YAML/JSON) mapping into a :class:`ModelConfig`.

    Args:
        data: The mapping (``model`` section of a training config or checkpoint).
        path: Key path of ``data``, for error messages.

    Raises:
        InputDataError: on unknown keys (at any level, including encoder options) or
            invalid values; the message names the full key path
            (``model.encoder.kwargs.hidden_dim``).
    """
    return from_dict(ModelConfig, data, path=path)


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:  # Any: plain JSON data
    """Plain-dict form with the encoder options resolved (defaults filled in)."""
    out = dataclasses.asdict(config)
    out["encoder"]["kwargs"] = _resolved_encoder_kwargs(config.encoder)
    return out
