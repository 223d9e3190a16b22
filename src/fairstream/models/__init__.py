"""Transducer models: encoders, predictors, joiner, explicit streaming state, factory."""

from __future__ import annotations

from fairstream.models.factory import (
    EncoderConfig,
    JoinerConfig,
    ModelConfig,
    PredictorConfig,
    build_model,
    model_config_from_dict,
    model_config_to_dict,
)
from fairstream.models.joiner import Joiner
from fairstream.models.predictor import LSTMPredictor, StatelessPredictor
from fairstream.models.transducer import Transducer, TransducerOutput

__all__ = [
    "EncoderConfig",
    "Joiner",
    "JoinerConfig",
    "LSTMPredictor",
    "ModelConfig",
    "PredictorConfig",
    "StatelessPredictor",
    "Transducer",
    "TransducerOutput",
    "build_model",
    "model_config_from_dict",
    "model_config_to_dict",
]
