"""The eSpeak NG binding: audio out, voices, reproducibility, bad input."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import threading
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from fairstream.data.espeak import (
    ESPEAK_SAMPLE_RATE,
    EspeakSynthesizer,
    available_accents,
    available_variants,
    parse_voice,
    synthesize,
)
from fairstream.errors import CorpusError

TEXT = "set a timer for twenty five minutes"
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc"]


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(x.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def synth() -> EspeakSynthesizer:
    return EspeakSynthesizer()


@pytest.mark.parametrize("accent", ACCENTS)
def test_every_accent_speaks(synth: EspeakSynthesizer, accent: str) -> None:
    x = synth.synthesize(TEXT, voice=accent, seed=1)
    assert x.dtype == np.float32 and x.ndim == 1
    assert 1.0 < len(x) / ESPEAK_SAMPLE_RATE < 5.0
    assert 0.05 < float(np.abs(x).max()) <= 1.0


def test_accents_and_variants_sound_different(synth: EspeakSynthesizer) -> None:
    digests = {_digest(synth.synthesize(TEXT, voice=v, seed=1))
               for v in ["en-us", "en-gb-scotland", "en-029", "en-us+f3", "en-us+m3"]}
    assert len(digests) == 5


def test_rate_and_pitch_change_the_audio(synth: EspeakSynthesizer) -> None:
    slow = synth.synthesize(TEXT, voice="en-gb", rate=120, seed=1)
    fast = synth.synthesize(TEXT, voice="en-gb", rate=220, seed=1)
    assert len(slow) > 1.4 * len(fast)
    low = synth.synthesize(TEXT, voice="en-gb", pitch=20, seed=1)
    high = synth.synthesize(TEXT, voice="en-gb", pitch=80, seed=1)
    assert _digest(low) != _digest(high)


def test_same_request_gives_identical_samples_regardless_of_history(
        synth: EspeakSynthesizer) -> None:
    # eSpeak keeps static state (pitch flutter, wave phase); the binding must reset it per call
    first = synth.synthesize(TEXT, voice="en-gb-scotland+f3", rate=160, pitch=40, seed=7)
    synth.synthesize("what's the weather in albuquerque", voice="en-029+m3", rate=220, pitch=10,
                     seed=3)
    again = synth.synthesize(TEXT, voice="en-gb-scotland+f3", rate=160, pitch=40, seed=7)
    np.testing.assert_array_equal(first, again)


def _in_worker(args: tuple[str, str, int]) -> str:
    text, voice, seed = args
    return _digest(synthesize(text, voice=voice, seed=seed))


def test_identical_samples_in_another_process(synth: EspeakSynthesizer) -> None:
    jobs = [(TEXT, "en-gb-x-rp+m2", 11), ("call mom on speaker", "en-us+f1", 12)]
    here = [_digest(synth.synthesize(t, voice=v, seed=s)) for t, v, s in jobs]
    with ProcessPoolExecutor(1, mp_context=mp.get_context("forkserver")) as ex:
        there = list(ex.map(_in_worker, jobs[::-1]))[::-1]
    assert here == there


def test_voice_resolution() -> None:
    assert parse_voice("en-gb").identifier == "gmw/en"
    spec = parse_voice("en-GB-scotland+f3")
    assert (spec.identifier, spec.variant) == ("gmw/en-GB-scotland", "f3")
    assert spec.espeak_name == "gmw/en-GB-scotland+f3"
    assert set(ACCENTS) <= set(available_accents())
    assert {"m1", "f1", "f5", "m8"} <= set(available_variants())


@pytest.mark.parametrize(("voice", "named"), [
    ("en-klingon", "en-klingon"),
    ("en-gb+nosuchvariant", "nosuchvariant"),
    ("", "''"),
])
def test_unknown_voice_is_a_clear_error(synth: EspeakSynthesizer, voice: str, named: str) -> None:
    with pytest.raises(CorpusError, match="unknown eSpeak voice") as info:
        synth.synthesize(TEXT, voice=voice)
    assert named in str(info.value)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"rate": 20}, "rate 20"),
    ({"pitch": 150}, "pitch 150"),
    ({"pitch_range": -1}, "pitch_range -1"),
])
def test_out_of_range_parameters(
        synth: EspeakSynthesizer, kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(CorpusError, match=match):
        synth.synthesize(TEXT, voice="en-us", **kwargs)


def test_empty_text_is_rejected(synth: EspeakSynthesizer) -> None:
    with pytest.raises(CorpusError, match="empty text"):
        synth.synthesize("   ", voice="en-us")


def test_second_thread_is_refused(synth: EspeakSynthesizer) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            synth.synthesize(TEXT, voice="en-us")
        except CorpusError as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors and "thread" in str(errors[0])
