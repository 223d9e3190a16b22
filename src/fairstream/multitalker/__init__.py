"""Multi-talker streaming recognition: turn targets, the separator-transducer-segmenter.

* :mod:`fairstream.multitalker.targets`: HEAT channel assignment of reference turns, the
  ``<sot> … <eot>`` token sequence of each output channel, and the end-of-turn latency
  penalty as a label bias of the RNN-T lattice.
* :mod:`fairstream.multitalker.model`: the separator-transducer-segmenter (any registered
  streaming encoder, a per-channel separator, one shared transducer), its loss, offline and
  chunk-by-chunk decoding of every channel, and the cut of a channel into turns.

Scoring (cpWER, ORC-WER) lives in :mod:`fairstream.metrics.multitalker`; mixing two-speaker
sessions from a corpus in :mod:`fairstream.data.mixing`.
"""

from fairstream.multitalker.targets import (
    EOT,
    SOT,
    ChannelTarget,
    channel_targets,
    check_session,
    eot_delay_bias,
    heat_assign,
)

__all__ = [
    "EOT",
    "SOT",
    "ChannelTarget",
    "channel_targets",
    "check_session",
    "eot_delay_bias",
    "heat_assign",
]
