"""Corpus build configurations: the ``tiny``, ``demo`` and ``full`` presets.

=======  ==================  ===========  =================================================
preset   speakers tr/dev/te  utterances   use
=======  ==================  ===========  =================================================
tiny     24 / 8 / 8          ≈ 200        tests; builds in seconds
demo     400 / 40 / 96       ≈ 7,550      ≈ 5.5 h of audio (≈ 4.4 h train); the demo
full     2400 / 160 / 400    ≈ 45,000     ≈ 33 h; experiments that need more data
=======  ==================  ===========  =================================================
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from fairstream.data.speakers import SpeakerConfig
from fairstream.errors import CorpusError

__all__ = ["FORMAT_VERSION", "PRESETS", "CorpusConfig", "get_preset"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that determines a synthetic corpus (together with the seed).

    Attributes:
        preset: name of the preset this config came from.
        speakers: speaker counts and sampling parameters.
        utterances_per_speaker: (train, dev, test) utterances per speaker.
        sample_rate: output sample rate in Hz.
        rate_jitter: per-utterance relative speaking-rate change (uniform ±).
        pitch_jitter: per-utterance pitch change in eSpeak units (uniform ±).
        snr_jitter_db: per-utterance SNR change in dB (uniform ±).
        lead_silence, trail_silence: (min, max) seconds of padding around the speech.
        level_dbfs: (min, max) RMS level of the final mix in dBFS.
        cmvn_max_utterances: training utterances used for the CMVN statistics (evenly spaced).
    """

    preset: str
    speakers: SpeakerConfig
    utterances_per_speaker: tuple[int, int, int]
    sample_rate: int = 16000
    rate_jitter: float = 0.06
    pitch_jitter: int = 4
    snr_jitter_db: float = 2.0
    lead_silence: tuple[float, float] = (0.10, 0.35)
    trail_silence: tuple[float, float] = (0.10, 0.35)
    level_dbfs: tuple[float, float] = (-26.0, -16.0)
    cmvn_max_utterances: int = 2000

    def __post_init__(self) -> None:
        if len(self.utterances_per_speaker) != 3 or min(self.utterances_per_speaker) < 1:
            raise CorpusError(
                f"utterances_per_speaker must be three positive counts (train, dev, test), "
                f"got {self.utterances_per_speaker}"
            )
        if self.sample_rate not in (8000, 16000, 22050):
            raise CorpusError(f"sample_rate {self.sample_rate} is not one of 8000, 16000, 22050")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (what the fingerprint hashes)."""
        return asdict(self)

    def fingerprint(self, seed: int) -> str:
        """SHA-256 over the format version, config and seed: equal fingerprints → equal corpora."""
        payload = json.dumps({"format_version": FORMAT_VERSION, "seed": int(seed), "config": self.to_dict()},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def n_utterances(self) -> int:
        """Total number of utterances the config asks for."""
        s = self.speakers
        tr, dv, te = self.utterances_per_speaker
        return s.n_train * tr + s.n_dev * dv + s.n_test * te


PRESETS: dict[str, CorpusConfig] = {
    "tiny": CorpusConfig(
        preset="tiny",
        speakers=SpeakerConfig(n_train=24, n_dev=8, n_test=8),
        utterances_per_speaker=(6, 3, 5),
        cmvn_max_utterances=200,
    ),
    "demo": CorpusConfig(
        preset="demo",
        speakers=SpeakerConfig(n_train=400, n_dev=40, n_test=96),
        utterances_per_speaker=(15, 10, 12),
    ),
    "full": CorpusConfig(
        preset="full",
        speakers=SpeakerConfig(n_train=2400, n_dev=160, n_test=400),
        utterances_per_speaker=(16, 12, 12),
        cmvn_max_utterances=4000,
    ),
}


def get_preset(name: str, **overrides: Any) -> CorpusConfig:
    """The named preset, optionally with top-level fields replaced.

    Raises:
        CorpusError: unknown preset name.
    """
    try:
        config = PRESETS[name]
    except KeyError:
        raise CorpusError(f"unknown corpus preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return replace(config, **overrides) if overrides else config
