"""Synthetic speakers: accent, voice, recording environment and a (synthetic) home address.

Every speaker is a fixed combination of

* an **accent** (an eSpeak NG English voice such as ``en-gb-scotland``) and a **voice variant**
  (``m1``…``m8``, ``f1``…``f5`` and other male/female variants from ``espeak-ng-data/voices/!v``),
* a base **pitch**, **pitch range** and **speaking rate**,
* a **recording environment**: additive noise type (white, pink, brown, babble-like, mains hum),
  signal-to-noise ratio and an optional telephone band-limit (300–3400 Hz),
* **gender** (from the variant), **age band**, and a home **latitude/longitude** next to a real US
  zip code (``zipcodes`` package) drawn from a set of states tied to the accent; a share of
  speakers (``mobility``) lives anywhere in the country instead.

The zip-level demographics table (:func:`zip_demographics`) is synthetic: census-style majority
attributes drawn per zip from a regional profile. The profile depends on the state, so the
attributes correlate with accent without being a copy of it.

The **planted disparity**: the accents in ``under_represented`` get only
``under_represented_train_share`` of the training speakers each, while dev and test keep the
normal shares (``accent_weights``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from fairstream.data import layout
from fairstream.errors import CorpusError

__all__ = [
    "ACCENT_REGIONS",
    "AGE_BANDS",
    "FEMALE_VARIANTS",
    "MALE_VARIANTS",
    "NOISE_TYPES",
    "Speaker",
    "SpeakerConfig",
    "allocate_counts",
    "sample_speakers",
    "speakers_frame",
    "zip_demographics",
]

AGE_BANDS = ("18-29", "30-44", "45-59", "60+")
NOISE_TYPES = ("white", "pink", "brown", "babble", "hum")

# US states where speakers of each accent live (a synthetic, documented mapping: overlapping
# regions make geography correlate with accent without identifying it).
ACCENT_REGIONS: dict[str, tuple[str, ...]] = {
    "en-us": ("CA", "TX", "AZ", "CO", "NV", "UT", "WA", "OR", "OH", "MO", "KS", "NE", "OK", "IA",
              "MN", "IN", "ID", "MT", "NM", "AR", "LA", "AL", "MS", "SC", "GA", "ND", "SD", "WY",
              "AK", "HI"),
    "en-us-nyc": ("NY", "NJ"),
    "en-gb": ("NY", "MA", "CA", "WA", "IL"),
    "en-gb-x-rp": ("MA", "CT", "VT", "NH", "ME", "RI", "DC", "MD", "VA"),
    "en-gb-scotland": ("NC", "TN", "KY", "WV", "VA"),
    "en-gb-x-gbclan": ("PA", "OH", "MI", "IN"),
    "en-gb-x-gbcwmd": ("WI", "MN", "IL", "IA", "MI"),
    "en-029": ("FL", "NY", "GA", "NJ", "MD"),
}

ACCENT_LABELS: dict[str, str] = {
    "en-us": "General American",
    "en-us-nyc": "New York City",
    "en-gb": "British (Southern England)",
    "en-gb-x-rp": "Received Pronunciation",
    "en-gb-scotland": "Scottish",
    "en-gb-x-gbclan": "Lancastrian",
    "en-gb-x-gbcwmd": "West Midlands",
    "en-029": "Caribbean",
}

# variants with a plain, intelligible timbre; the first block of each list is drawn more often
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Andrea", "belinda", "linda", "anika", "Annie",
                   "aunty", "steph", "steph2", "steph3")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "Lee", "Denis", "Diogo",
                 "Henrique", "Hugo", "Marco", "antonio", "michel", "miguel", "sandro", "victor",
                 "john", "ian", "paul", "robert", "pedro", "norbert", "gustave")
_STANDARD_SHARE = 0.55  # share of speakers with an f1-f5 / m1-m8 variant

_US_STATES = frozenset(
    ["AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN",
     "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH",
     "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT",
     "VT", "VA", "WA", "WV", "WI", "WY"]
)


@dataclass(frozen=True)
class SpeakerConfig:
    """How many speakers to draw and how.

    Attributes:
        n_train, n_dev, n_test: speakers per split (disjoint).
        accents: accent names (keys of :data:`ACCENT_REGIONS`).
        accent_weights: relative "normal" share of each accent (dev/test use these shares).
        under_represented: the planted cohorts: accents that are rare in train.
        under_represented_train_share: share of training speakers for EACH planted accent.
        mobility: probability that a speaker lives outside the accent's region.
        telephone_share: probability of a telephone band-limited channel.
        noise_weights: probability of each noise type in :data:`NOISE_TYPES`.
        snr_bands: (probability, low dB, high dB) mixture for the speaker's SNR.
        rate_mean, rate_sd, rate_min, rate_max: speaking rate in words per minute.
        pitch_sd, range_sd: spread of eSpeak pitch and pitch-range settings around 50.
    """

    n_train: int
    n_dev: int
    n_test: int
    accents: tuple[str, ...] = ("en-us", "en-us-nyc", "en-gb", "en-gb-x-rp", "en-gb-scotland",
                                "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
    accent_weights: tuple[float, ...] = (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    under_represented: tuple[str, ...] = ("en-gb-scotland", "en-029")
    under_represented_train_share: float = 0.03
    mobility: float = 0.15
    telephone_share: float = 0.12
    noise_weights: tuple[float, ...] = (0.15, 0.25, 0.15, 0.3, 0.15)
    snr_bands: tuple[tuple[float, float, float], ...] = ((0.2, 30.0, 40.0), (0.7, 12.0, 30.0),
                                                         (0.1, 8.0, 12.0))
    rate_mean: float = 168.0
    rate_sd: float = 14.0
    rate_min: int = 135
    rate_max: int = 205
    pitch_sd: float = 12.0
    range_sd: float = 12.0
    age_weights: tuple[float, ...] = (0.25, 0.3, 0.25, 0.2)

    def __post_init__(self) -> None:
        for name in ("n_train", "n_dev", "n_test"):
            if getattr(self, name) < 1:
                raise CorpusError(f"SpeakerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.accent_weights) != len(self.accents):
            raise CorpusError(
                f"SpeakerConfig: {len(self.accent_weights)} accent_weights for "
                f"{len(self.accents)} accents"
            )
        if len(set(self.accents)) != len(self.accents):
            raise CorpusError(f"SpeakerConfig: duplicate accents in {self.accents}")
        for accent in self.accents:
            if accent not in ACCENT_REGIONS:
                raise CorpusError(
                    f"unknown accent {accent!r}; known accents: {', '.join(sorted(ACCENT_REGIONS))}"
                )
        for accent in self.under_represented:
            if accent not in self.accents:
                raise CorpusError(f"under-represented accent {accent!r} is not one of the "
                                  f"accents {self.accents}")
        if not 0.0 <= self.under_represented_train_share * len(self.under_represented) < 1.0:
            raise CorpusError(
                f"under_represented_train_share {self.under_represented_train_share} x "
                f"{len(self.under_represented)} accents must stay below 1"
            )
        if len(self.noise_weights) != len(NOISE_TYPES):
            raise CorpusError(f"noise_weights needs {len(NOISE_TYPES)} entries ({NOISE_TYPES})")
        if len(self.age_weights) != len(AGE_BANDS):
            raise CorpusError(f"age_weights needs {len(AGE_BANDS)} entries ({AGE_BANDS})")

    def normal_shares(self) -> dict[str, float]:
        """Share of each accent in dev/test (and in train without the planted disparity)."""
        total = sum(self.accent_weights)
        return {a: w / total for a, w in zip(self.accents, self.accent_weights)}

    def train_shares(self) -> dict[str, float]:
        """Share of each accent among training speakers (with the planted disparity)."""
        normal = self.normal_shares()
        planted = set(self.under_represented)
        rest = sum(v for a, v in normal.items() if a not in planted)
        remaining = 1.0 - self.under_represented_train_share * len(planted)
        share = self.under_represented_train_share
        return {a: (share if a in planted else normal[a] / rest * remaining) for a in self.accents}

    def to_dict(self) -> dict[str, Any]:  # Any: JSON values of mixed types
        """JSON-ready dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker (a row of ``speakers.csv``)."""

    speaker_id: str
    split: str
    accent: str
    voice: str
    gender: str
    age_band: str
    pitch: int
    rate: int
    noise_type: str
    snr_db: float
    telephone: bool
    lat: float
    lon: float
    zip: str
    state: str
    variant: str = ""
    pitch_range: int = 50
    city: str = ""
    accent_label: str = field(default="")


def allocate_counts(total: int, shares: Mapping[str, float], *, minimum: int = 0) -> dict[str, int]:
    """Split ``total`` items by ``shares`` with the largest-remainder method (exact, deterministic).

    Every key gets at least ``minimum`` items when ``total`` allows it.
    """
    keys = list(shares)
    s = np.array([max(0.0, shares[k]) for k in keys], dtype=np.float64)
    if s.sum() <= 0:
        raise CorpusError(f"allocate_counts: shares {dict(shares)} sum to zero")
    exact = s / s.sum() * total
    counts = np.floor(exact).astype(int)
    order = sorted(range(len(keys)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    if minimum and total >= minimum * len(keys):
        for i in range(len(keys)):
            while counts[i] < minimum:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[i] += 1
    return {k: int(c) for k, c in zip(keys, counts)}


@lru_cache(maxsize=1)
def _zips_by_state() -> dict[str, list[tuple[str, float, float, str]]]:
    import zipcodes

    out: dict[str, list[tuple[str, float, float, str]]] = {}
    for z in zipcodes.list_all():
        if (z.get("zip_code_type") != "STANDARD" or not z.get("active")
                or z.get("state") not in _US_STATES):
            continue
        try:
            lat, lon = float(z["lat"]), float(z["long"])
        except (KeyError, TypeError, ValueError):
            continue
        out.setdefault(z["state"], []).append((z["zip_code"], lat, lon, z.get("city", "")))
    for rows in out.values():
        rows.sort()
    return out


def _pick_state(rng: np.random.Generator, states: Sequence[str]) -> str:
    zips = _zips_by_state()
    weights = np.array([len(zips.get(s, ())) for s in states], dtype=np.float64)
    return states[int(rng.choice(len(states), p=weights / weights.sum()))]


def _home(
    rng: np.random.Generator, accent: str, mobility: float
) -> tuple[str, str, float, float, str]:
    states = ACCENT_REGIONS[accent]
    if rng.random() < mobility:
        states = tuple(sorted(_US_STATES))
    state = _pick_state(rng, states)
    rows = _zips_by_state()[state]
    zip_code, lat, lon, city = rows[int(rng.integers(len(rows)))]
    lat = round(lat + float(rng.normal(0.0, 0.01)), 4)
    lon = round(lon + float(rng.normal(0.0, 0.01)), 4)
    return zip_code, state, lat, lon, city.lower()


def _variant(rng: np.random.Generator, gender: str) -> str:
    pool = FEMALE_VARIANTS if gender == "female" else MALE_VARIANTS
    n_standard = min(5 if gender == "female" else 8, len(pool))
    if rng.random() < _STANDARD_SHARE or n_standard == len(pool):
        return pool[int(rng.integers(n_standard))]
    return pool[n_standard + int(rng.integers(len(pool) - n_standard))]


def _draw_speaker(rng: np.random.Generator, config: SpeakerConfig, speaker_id: str, split: str,
                  accent: str) -> Speaker:
    gender = "female" if rng.random() < 0.5 else "male"
    variant = _variant(rng, gender)
    age_p = np.array(config.age_weights) / sum(config.age_weights)
    age_band = AGE_BANDS[int(rng.choice(len(AGE_BANDS), p=age_p))]
    older = age_band == "60+"
    pitch = int(np.clip(round(rng.normal(50.0, config.pitch_sd)), 20, 80))
    pitch_range = int(np.clip(round(rng.normal(50.0 - (6 if older else 0), config.range_sd)),
                              20, 85))
    rate = int(np.clip(round(rng.normal(config.rate_mean - (10 if older else 0), config.rate_sd)),
                       config.rate_min, config.rate_max))
    noise_p = np.array(config.noise_weights) / sum(config.noise_weights)
    noise_type = NOISE_TYPES[int(rng.choice(len(NOISE_TYPES), p=noise_p))]
    band_p = np.array([b[0] for b in config.snr_bands])
    _, lo, hi = config.snr_bands[int(rng.choice(len(band_p), p=band_p / band_p.sum()))]
    snr_db = round(float(rng.uniform(lo, hi)), 1)
    telephone = bool(rng.random() < config.telephone_share)
    zip_code, state, lat, lon, city = _home(rng, accent, config.mobility)
    return Speaker(
        speaker_id=speaker_id, split=split, accent=accent, voice=f"{accent}+{variant}",
        gender=gender, age_band=age_band, pitch=pitch, rate=rate, noise_type=noise_type,
        snr_db=snr_db, telephone=telephone, lat=lat, lon=lon, zip=zip_code, state=state,
        variant=variant, pitch_range=pitch_range, city=city,
        accent_label=ACCENT_LABELS.get(accent, accent),
    )


def sample_speakers(config: SpeakerConfig, seed: int,
                    extra_splits: Sequence[tuple[str, int]] = ()) -> list[Speaker]:
    """Draw all speakers of a corpus.

    Accent counts per split are exact (largest remainder on the configured shares); the order
    of speakers inside a split is shuffled so that ids do not reveal the accent.

    Args:
        config: speaker configuration.
        seed: corpus seed; same seed and config → identical speakers.
        extra_splits: (split name, speakers) after test, drawn with the normal accent shares.

    Returns:
        Speakers ordered train, dev, test, then the extra splits, with ids ``spk0000``,
        ``spk0001``, ...
    """
    rng = np.random.default_rng([seed, 101])
    plan: list[tuple[str, str]] = []
    sizes = [("train", config.n_train), ("dev", config.n_dev), ("test", config.n_test),
             *extra_splits]
    for split, n in sizes:
        shares = config.train_shares() if split == "train" else config.normal_shares()
        counts = allocate_counts(n, shares, minimum=1)
        accents = [a for a in config.accents for _ in range(counts[a])]
        order = rng.permutation(len(accents))
        plan.extend((split, accents[i]) for i in order)
    width = max(4, len(str(len(plan) - 1)))
    return [
        _draw_speaker(np.random.default_rng([seed, 102, i]), config, f"spk{i:0{width}d}", split,
                      accent)
        for i, (split, accent) in enumerate(plan)
    ]


SPEAKER_COLUMNS = (*layout.SPEAKER_COLUMNS, "variant", "pitch_range", "city", "accent_label")


def speakers_frame(speakers: Sequence[Speaker]) -> pd.DataFrame:
    """``speakers.csv`` as a DataFrame (contract columns first, then extras)."""
    df = pd.DataFrame([asdict(s) for s in speakers], columns=list(SPEAKER_COLUMNS))
    df["zip"] = df["zip"].astype(str)
    return df


# ------------------------------------------------------- zip-level demographics (synthetic)

_RACE = ("white", "black", "hispanic", "asian", "no_majority")
_INCOME = ("under_35k", "35k_60k", "60k_100k", "over_100k")
_EDU = ("high_school", "some_college", "bachelors", "graduate")
_URBAN = ("urban", "suburban", "rural")
_INCOME_RANGE = {"under_35k": (22_000, 35_000), "35k_60k": (35_000, 60_000),
                 "60k_100k": (60_000, 100_000), "over_100k": (100_000, 180_000)}

# profile -> (race, income, education, urbanicity, age) probabilities; synthetic, for method testing
_PROFILES: dict[str, tuple[tuple[float, ...], ...]] = {
    "en-us": ((.60, .10, .20, .05, .05), (.15, .35, .35, .15), (.30, .35, .25, .10),
              (.30, .45, .25), (.25, .30, .25, .20)),
    "en-us-nyc": ((.35, .20, .20, .10, .15), (.15, .25, .35, .25), (.25, .25, .30, .20),
                  (.80, .18, .02), (.30, .35, .20, .15)),
    "en-gb": ((.55, .05, .10, .15, .15), (.05, .20, .40, .35), (.10, .20, .40, .30),
              (.60, .35, .05), (.30, .35, .20, .15)),
    "en-gb-x-rp": ((.75, .05, .05, .05, .10), (.05, .15, .35, .45), (.10, .15, .35, .40),
                   (.25, .60, .15), (.15, .30, .30, .25)),
    "en-gb-scotland": ((.85, .05, .05, .01, .04), (.40, .40, .15, .05), (.50, .30, .15, .05),
                       (.10, .25, .65), (.10, .20, .35, .35)),
    "en-gb-x-gbclan": ((.75, .10, .07, .03, .05), (.20, .45, .30, .05), (.40, .35, .18, .07),
                       (.35, .45, .20), (.20, .30, .30, .20)),
    "en-gb-x-gbcwmd": ((.80, .05, .07, .03, .05), (.15, .40, .35, .10), (.35, .35, .22, .08),
                       (.20, .40, .40), (.20, .30, .30, .20)),
    "en-029": ((.20, .50, .20, .02, .08), (.35, .40, .20, .05), (.40, .35, .18, .07),
               (.65, .30, .05), (.30, .35, .20, .15)),
}
# a state takes the profile of the first accent region (in this order) that lists it
_PROFILE_PRIORITY = ("en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-rp", "en-gb-x-gbclan",
                     "en-gb-x-gbcwmd", "en-gb", "en-us")


def _state_profile(state: str) -> str:
    for accent in _PROFILE_PRIORITY:
        if state in ACCENT_REGIONS[accent]:
            return accent
    return "en-us"


def zip_demographics(
    speakers: Sequence[Speaker], seed: int, *, regional_weight: float = 0.75
) -> pd.DataFrame:
    """Synthetic census-style majority attributes for every zip code a speaker lives in.

    Each zip draws its attributes from the regional profile of its state with probability
    ``regional_weight`` and from the national profile otherwise, seeded by ``(seed, zip)``,
    so the table correlates with accent through geography, not by construction.

    Returns:
        One row per zip: zip, state, lat, lon, city, majority_race_ethnicity,
        majority_income_band, majority_education, urbanicity, majority_age_band,
        median_household_income, synthetic (always True).
    """
    rows: dict[str, dict[str, Any]] = {}  # Any: table cells of mixed types
    lookup = {z[0]: z for rows_ in _zips_by_state().values() for z in rows_}
    for spk in speakers:
        if spk.zip in rows:
            continue
        _, lat, lon, city = lookup.get(spk.zip, (spk.zip, spk.lat, spk.lon, spk.city))
        rng = np.random.default_rng([seed, 103, int(spk.zip)])
        regional = rng.random() < regional_weight
        profile = _PROFILES[_state_profile(spk.state) if regional else "en-us"]
        race, income, edu, urban, age = (
            cats[int(rng.choice(len(cats), p=np.array(p) / sum(p)))]
            for cats, p in zip((_RACE, _INCOME, _EDU, _URBAN, AGE_BANDS), profile)
        )
        lo, hi = _INCOME_RANGE[income]
        rows[spk.zip] = {
            "zip": spk.zip, "state": spk.state, "lat": lat, "lon": lon, "city": str(city).lower(),
            "majority_race_ethnicity": race, "majority_income_band": income,
            "majority_education": edu,
            "urbanicity": urban, "majority_age_band": age,
            "median_household_income": int(math.floor(rng.uniform(lo, hi) / 100) * 100),
            "synthetic": True,
        }
    return pd.DataFrame(sorted(rows.values(), key=lambda r: r["zip"]))
