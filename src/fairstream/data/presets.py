"""Corpus build configurations: the ``tiny``, ``demo`` and ``full`` presets.

==========  ==================  ===========  ==============================================
preset      speakers tr/dev/te  utterances   use
==========  ==================  ===========  ==============================================
tiny        24 / 8 / 8          ≈ 200        tests; builds in seconds
demo        400 / 40 / 96       ≈ 7,550      ≈ 5.5 h of audio (≈ 4.4 h train); the demo
demo-clean  400 / 40 / 96       ≈ 9,150      demo with clean test text (:class:`TextHoldout`)
                                             and an audit split of 400 speakers x 4 utterances
full        2400 / 160 / 400    ≈ 45,000     ≈ 33 h; experiments that need more data
==========  ==================  ===========  ==============================================

Every preset has the splits train, dev and test; a config adds more with ``extra_splits``
(``demo-clean``: ``SplitSpec("audit", speakers=400, utterances_per_speaker=4)``, unseen speakers
for the fairness audit, whose cohort searches need more speakers than the test split has).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from fairstream.data.layout import (
    DEFAULT_SPLITS,
    JsonObject,
    check_split_name,
)
from fairstream.data.speakers import SpeakerConfig
from fairstream.errors import CorpusError

__all__ = ["PRESETS", "CorpusConfig", "SplitSpec", "TextHoldout", "get_preset"]

# The corpus fingerprint has hashed {"format_version": 1, ...} since it was introduced. It is
# frozen here, apart from the layout version, so that a new layout version does not change the
# fingerprint of an unchanged spec (``--resume`` of an existing build compares fingerprints).
_FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class SplitSpec:
    """A split beyond train/dev/test: its name and size.

    Its speakers are disjoint from every other split's and drawn with the normal accent
    shares (like dev and test, without the planted disparity).

    Attributes:
        name: split name (lower-case letters, digits, ``_``, ``-``).
        speakers: number of speakers.
        utterances_per_speaker: utterances each speaker says.
    """

    name: str
    speakers: int
    utterances_per_speaker: int

    def __post_init__(self) -> None:
        check_split_name(self.name)
        if self.name in DEFAULT_SPLITS:
            raise CorpusError(f"extra split {self.name!r} repeats one of the default splits "
                              f"{DEFAULT_SPLITS}; size those with speakers/utterances_per_speaker")
        if self.speakers < 1 or self.utterances_per_speaker < 1:
            raise CorpusError(
                f"split {self.name!r} needs at least one speaker and utterance, got "
                f"{self.speakers} speakers x {self.utterances_per_speaker} utterances"
            )


@dataclass(frozen=True)
class TextHoldout:
    """Clean test text: what the evaluation splits hold back from training.

    Every split other than ``train`` is an evaluation split (dev, test and any extra split).

    Attributes:
        disjoint_sentences: no evaluation sentence (normalized text) occurs among the training
            sentences; an evaluation utterance whose drawn sentence is a training sentence
            draws again.
        slot_share: share of each open slot's values (:data:`~fairstream.data.templates.OPEN_SLOTS`:
            first names, artists, songs, cities, groceries) held out from training. Training
            sentences never contain a held-out value (a training utterance that draws one draws
            again); evaluation sentences draw from all values. 0 holds out none.
    """

    disjoint_sentences: bool = True
    slot_share: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.slot_share < 1.0:
            raise CorpusError(f"TextHoldout.slot_share must be in [0, 1), got {self.slot_share}")


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
        extra_splits: splits after train, dev and test (none in the presets).
        text_holdout: clean test text (:class:`TextHoldout`); ``None`` (the default, and every
            preset but ``demo-clean``) draws every split's text the same way.
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
    extra_splits: tuple[SplitSpec, ...] = ()
    text_holdout: TextHoldout | None = None

    def __post_init__(self) -> None:
        if len(self.utterances_per_speaker) != 3 or min(self.utterances_per_speaker) < 1:
            raise CorpusError(
                f"utterances_per_speaker must be three positive counts (train, dev, test), "
                f"got {self.utterances_per_speaker}"
            )
        if self.sample_rate not in (8000, 16000, 22050):
            raise CorpusError(f"sample_rate {self.sample_rate} is not one of 8000, 16000, 22050")
        names = [s.name for s in self.extra_splits]
        if len(set(names)) != len(names):
            raise CorpusError(f"extra_splits names repeat: {names}")

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names in build order: train, dev, test, then the extra splits."""
        return DEFAULT_SPLITS + tuple(s.name for s in self.extra_splits)

    def split_sizes(self) -> dict[str, tuple[int, int]]:
        """Split name → (speakers, utterances per speaker), in build order."""
        s = self.speakers
        sizes = dict(zip(DEFAULT_SPLITS, zip((s.n_train, s.n_dev, s.n_test),
                                             self.utterances_per_speaker)))
        sizes.update((x.name, (x.speakers, x.utterances_per_speaker)) for x in self.extra_splits)
        return sizes

    def to_dict(self) -> JsonObject:
        """JSON-ready dictionary (what the fingerprint hashes).

        ``extra_splits`` appears only when there are some and ``text_holdout`` only when it is
        set, so configs without them hash as they did before the fields existed.
        """
        d = asdict(self)
        if not self.extra_splits:
            del d["extra_splits"]
        if self.text_holdout is None:
            del d["text_holdout"]
        return d

    def fingerprint(self, seed: int) -> str:
        """SHA-256 over the config and seed: equal fingerprints → equal corpora."""
        payload = json.dumps({"format_version": _FINGERPRINT_VERSION, "seed": int(seed),
                              "config": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def n_utterances(self) -> int:
        """Total number of utterances the config asks for."""
        return sum(n * k for n, k in self.split_sizes().values())


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
    "demo-clean": CorpusConfig(
        preset="demo-clean",
        speakers=SpeakerConfig(n_train=400, n_dev=40, n_test=96),
        utterances_per_speaker=(15, 10, 12),
        text_holdout=TextHoldout(),
        extra_splits=(SplitSpec("audit", speakers=400, utterances_per_speaker=4),),
    ),
    "full": CorpusConfig(
        preset="full",
        speakers=SpeakerConfig(n_train=2400, n_dev=160, n_test=400),
        utterances_per_speaker=(16, 12, 12),
        cmvn_max_utterances=4000,
    ),
}


# Any: overrides are CorpusConfig fields of several types (dataclasses.replace checks the names)
def get_preset(name: str, **overrides: Any) -> CorpusConfig:
    """The named preset, optionally with top-level fields replaced.

    Raises:
        CorpusError: unknown preset name.
    """
    try:
        config = PRESETS[name]
    except KeyError:
        raise CorpusError(
            f"unknown corpus preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None
    return replace(config, **overrides) if overrides else config
