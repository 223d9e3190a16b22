"""Encoder registry.

Encoders register under a name with :func:`register_encoder`; ``build_model`` looks them up
in :data:`ENCODERS`. An encoder class takes ``input_dim`` as its first argument and its
options as keyword arguments (those are what ``EncoderConfig.kwargs`` may hold), and follows
the encoder contract: ``forward(x (B,T,F), x_lens) -> (y (B,T',D), y_lens)``,
``stream(x, x_lens, state | None) -> (y, y_lens, state)``, attributes ``subsampling`` and
``output_dim``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

__all__ = ["ENCODERS", "register_encoder"]

ENCODERS: dict[str, type[nn.Module]] = {}

_E = TypeVar("_E", bound=type[nn.Module])


def register_encoder(name: str) -> Callable[[_E], _E]:
    """Class decorator registering an encoder under ``name``.

    Raises:
        ValueError: if ``name`` is already registered to another class.
    """

    def decorator(cls: _E) -> _E:
        existing = ENCODERS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"encoder name {name!r} already registered to {existing.__name__}")
        ENCODERS[name] = cls
        return cls

    return decorator


# Importing the modules registers the encoders they define.
from fairstream.models.encoders import lstm as _lstm  # noqa: F401
