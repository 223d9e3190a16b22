"""Encoder registry.

Encoders register under a name with :func:`register_encoder`, together with a frozen options
dataclass; ``build_model`` looks them up in :data:`ENCODERS` and :data:`ENCODER_OPTIONS`. An
encoder class takes ``input_dim`` as its first argument and the fields of its options class
as keyword arguments (those are the keys ``model.encoder.kwargs`` may hold in a config, each
checked against the field's type), and follows the encoder contract of
:mod:`fairstream.models.encoders.base`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from fairstream.models.encoders.base import EncoderOutput, StreamingEncoder, check_encoder

__all__ = [
    "ENCODERS",
    "ENCODER_OPTIONS",
    "EncoderOutput",
    "StreamingEncoder",
    "check_encoder",
    "register_encoder",
]

ENCODERS: dict[str, type[nn.Module]] = {}
"""Encoder classes by registered name."""

ENCODER_OPTIONS: dict[str, type] = {}
"""Frozen options dataclass of each registered encoder, by name."""

_E = TypeVar("_E", bound=type[nn.Module])


def _check_options(cls: type[nn.Module], options: type) -> None:
    """The options dataclass must be frozen and match the constructor's keyword options."""
    params = inspect.signature(cls.__init__).parameters
    frozen = getattr(getattr(options, "__dataclass_params__", None), "frozen", False)
    if not dataclasses.is_dataclass(options) or not frozen:
        raise ValueError(f"options of encoder {cls.__name__} must be a frozen dataclass")
    for f in dataclasses.fields(options):
        p = params.get(f.name)
        if p is None or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise ValueError(f"{cls.__name__}() takes no keyword option {f.name!r} of "
                             f"{options.__name__}")
        if f.default is dataclasses.MISSING or p.default != f.default:
            raise ValueError(f"{options.__name__}.{f.name} must have a default equal to that "
                             f"of {cls.__name__}() ({p.default!r})")
    names = {f.name for f in dataclasses.fields(options)}
    extra = [
        n for n, p in list(params.items())[2:]  # after self, input_dim
        if n not in names and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if extra:
        raise ValueError(f"{cls.__name__}() options {extra} are missing from {options.__name__}")


def register_encoder(name: str, *, options: type) -> Callable[[_E], _E]:
    """Class decorator registering an encoder under ``name`` with its options dataclass.

    Args:
        name: Registry key (``model.encoder.name`` in a config).
        options: Frozen dataclass whose fields are the encoder's keyword options, with the
            same defaults.

    Raises:
        ValueError: if ``name`` is already registered to another class, or ``options`` does
            not match the constructor.
    """

    def decorator(cls: _E) -> _E:
        existing = ENCODERS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"encoder name {name!r} already registered to {existing.__name__}")
        _check_options(cls, options)
        ENCODERS[name] = cls
        ENCODER_OPTIONS[name] = options
        return cls

    return decorator


# Importing the modules registers the encoders they define.
from fairstream.models.encoders import conformer as _conformer  # noqa: E402, F401
from fairstream.models.encoders import contextnet as _contextnet  # noqa: E402, F401
from fairstream.models.encoders import convrnnt as _convrnnt  # noqa: E402, F401
from fairstream.models.encoders import lstm as _lstm  # noqa: E402, F401
from fairstream.models.encoders import transformer as _transformer  # noqa: E402, F401
