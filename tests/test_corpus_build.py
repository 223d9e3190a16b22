"""Corpus synthesis: layout, metadata, planted disparity, determinism, resume, bad inputs."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import zipcodes

from fairstream.data import synthesis
from fairstream.data.corpus import load_corpus
from fairstream.data.espeak import EspeakSynthesizer
from fairstream.data.layout import CorpusVersionError
from fairstream.data.presets import CorpusConfig, SplitSpec, get_preset
from fairstream.data.speakers import (
    AGE_BANDS,
    NOISE_TYPES,
    SpeakerConfig,
    allocate_counts,
    sample_speakers,
)
from fairstream.data.synthesis import build_corpus, make_noise, plan_utterances, render_utterance
from fairstream.errors import CorpusError

SPEAKER_COLUMNS = ["speaker_id", "split", "accent", "voice", "gender", "age_band", "pitch", "rate",
                   "noise_type", "snr_db", "telephone", "lat", "lon", "zip", "state"]
ZIP_COLUMNS = ["zip", "state", "lat", "lon", "majority_race_ethnicity", "majority_income_band",
               "majority_education", "urbanicity", "majority_age_band", "median_household_income"]
CUSTOM_KEYS = {"accent", "gender", "age_band", "lat", "lon", "zip"}


def mini_config() -> CorpusConfig:
    """12 utterances: enough to exercise every stage in about a second."""
    return replace(get_preset("tiny"), preset="mini",
                   speakers=SpeakerConfig(n_train=4, n_dev=2, n_test=2),
                   utterances_per_speaker=(2, 1, 1), cmvn_max_utterances=4)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mini_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mini") / "ref"
    build_corpus(mini_config(), out, seed=3, jobs=1, progress=False)
    return out


# ------------------------------------------------------------------------------ tiny corpus


def test_tiny_corpus_layout_and_counts(tiny_corpus: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    assert corpus.info["complete"] is True and corpus.info["preset"] == "tiny"
    assert corpus.splits == ["train", "dev", "test"]
    total = sum(len(corpus.cuts(s)) for s in corpus.splits)
    assert 180 <= total <= 240
    expected = {"corpus.json", "corpus_card.md", "speakers.csv", "zip_demographics.csv",
                "cmvn.json"}
    assert expected <= {p.name for p in tiny_corpus.iterdir()}


def test_speaker_metadata_is_complete(tiny_corpus: Path) -> None:
    spk = load_corpus(tiny_corpus).speakers
    assert list(spk.columns[: len(SPEAKER_COLUMNS)]) == SPEAKER_COLUMNS
    assert not spk[SPEAKER_COLUMNS].isna().any().any()
    assert spk["speaker_id"].is_unique
    assert set(spk["gender"]) == {"female", "male"}
    assert set(spk["age_band"]) <= set(AGE_BANDS)
    assert set(spk["noise_type"]) <= set(NOISE_TYPES)
    assert spk["snr_db"].between(5, 45).all()
    for row in spk.itertuples():
        assert len(row.zip) == 5
        match = zipcodes.matching(row.zip)
        assert match and match[0]["state"] == row.state, row.zip  # a real zip in the stated state
        assert abs(float(match[0]["lat"]) - row.lat) < 0.2
        assert abs(float(match[0]["long"]) - row.lon) < 0.2
        assert row.voice.startswith(row.accent + "+")


def test_zip_demographics_cover_every_speaker_and_are_labelled_synthetic(tiny_corpus: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    z = corpus.zip_demographics
    assert list(z.columns[:4]) == ZIP_COLUMNS[:4] and set(ZIP_COLUMNS) <= set(z.columns)
    assert z["zip"].is_unique and set(corpus.speakers["zip"]) <= set(z["zip"])
    assert z["synthetic"].all()
    assert not z[ZIP_COLUMNS].isna().any().any()


def test_splits_have_disjoint_speakers_and_supervisions_carry_metadata(tiny_corpus: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    seen: dict[str, str] = {}
    speakers = corpus.speakers.set_index("speaker_id")
    for split in corpus.splits:
        for cut in corpus.cuts(split):
            (sup,) = cut.supervisions
            assert seen.setdefault(sup.speaker, split) == split, f"{sup.speaker} in two splits"
            assert CUSTOM_KEYS <= set(sup.custom)
            assert sup.custom["accent"] == speakers.loc[sup.speaker, "accent"]
            assert sup.text and sup.text == sup.text.lower()
            assert not any(c.isdigit() for c in sup.text)
            assert cut.duration == pytest.approx(cut.recording.duration)


def test_audio_is_16k_mono_and_matches_manifest(tiny_corpus: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    cuts = corpus.cuts("test")
    for cut in list(cuts)[:10]:
        audio = cut.load_audio()
        assert audio.shape == (1, cut.recording.num_samples)
        assert cut.sampling_rate == 16000
        assert 0.01 < float(np.abs(audio).max()) < 1.0
    info = sf.info(str(tiny_corpus / next(iter(cuts)).recording.sources[0].source))
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")


def test_planted_disparity_is_visible_in_the_counts(tiny_corpus: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    planted = corpus.planted
    assert planted["under_represented_accents"] == ["en-gb-scotland", "en-029"]
    spk = corpus.speakers
    for accent in planted["under_represented_accents"]:
        train = (spk[spk.split == "train"].accent == accent).mean()
        test = (spk[spk.split == "test"].accent == accent).mean()
        assert train == pytest.approx(planted["train_share"][accent], abs=1e-3)
        assert train < test / 2
    card = (tiny_corpus / "corpus_card.md").read_text()
    assert "en-gb-scotland (planted)" in card and "en-029 (planted)" in card and "synthetic" in card


def test_demo_preset_sizing_and_planted_shares() -> None:
    config = get_preset("demo")
    speakers = sample_speakers(config.speakers, seed=0)
    df = pd.DataFrame([s.__dict__ for s in speakers])
    assert (df.split == "train").sum() >= 300
    assert 5000 <= config.n_utterances <= 9000
    train = df[df.split == "train"].accent.value_counts(normalize=True)
    test = df[df.split == "test"].accent.value_counts(normalize=True)
    for accent in config.speakers.under_represented:
        assert 0.02 <= train[accent] <= 0.05
        assert test[accent] >= 0.09
    # accent and home state are correlated but not identical
    in_region = np.mean([s.state in synthesis_regions()[s.accent] for s in speakers])
    assert 0.75 < in_region < 0.98
    assert len({s.voice for s in speakers}) > 150  # lots of distinct accent+variant voices


def synthesis_regions() -> dict[str, tuple[str, ...]]:
    from fairstream.data.speakers import ACCENT_REGIONS

    return ACCENT_REGIONS


def test_cmvn_statistics(tiny_corpus: Path) -> None:
    mean, std = load_corpus(tiny_corpus).cmvn
    assert mean.shape == std.shape == (80,)
    assert np.isfinite(mean).all() and (std > 0).all()
    assert json.loads((tiny_corpus / "cmvn.json").read_text())["frames"] > 1000


def test_allocate_counts_is_exact() -> None:
    counts = allocate_counts(100, {"a": 0.03, "b": 0.03, "c": 0.94})
    assert counts == {"a": 3, "b": 3, "c": 94}
    counts = allocate_counts(10, {"a": 0.01, "b": 0.5, "c": 0.49}, minimum=1)
    assert sum(counts.values()) == 10 and min(counts.values()) >= 1


# ---------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_across_job_counts(
        mini_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    build_corpus(mini_config(), out, seed=3, jobs=2, progress=False)
    ref, new = _files(mini_reference), _files(out)
    assert ref.keys() == new.keys()
    differing = [k for k in ref if ref[k] != new[k]]
    assert differing == []
    assert any(k.endswith(".flac") for k in ref) and any(k.endswith(".jsonl.gz") for k in ref)


def test_different_seed_gives_different_audio(mini_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "other"
    build_corpus(mini_config(), out, seed=4, jobs=1, progress=False)
    ref = load_corpus(mini_reference).cuts("train")
    other = load_corpus(out).cuts("train")
    assert [c.supervisions[0].text for c in ref] != [c.supervisions[0].text for c in other]


def test_manifests_are_lhotse_readable_jsonl_gz(mini_reference: Path) -> None:
    from lhotse import CutSet

    path = mini_reference / "manifests" / "train_cuts.jsonl.gz"
    first = json.loads(gzip.decompress(path.read_bytes()).splitlines()[0])
    assert first["recording"]["sources"][0]["source"].startswith("audio/train/")  # relocatable
    assert len(CutSet.from_file(path)) == 8


# ------------------------------------------------------------------------ resume/interrupt


def test_interrupted_build_is_not_complete_and_resume_finishes_it(
        mini_reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "interrupted"
    real = synthesis.render_utterance
    calls = {"n": 0}

    def flaky(spec, synth, sr):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(spec, synth, sr)

    monkeypatch.setattr(synthesis, "render_utterance", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(mini_config(), out, seed=3, jobs=1, progress=False)
    assert json.loads((out / "corpus.json").read_text())["complete"] is False
    assert not (out / "manifests").exists()
    assert len(list(out.rglob("*.flac"))) == 5
    with pytest.raises(CorpusError, match="incomplete"):
        load_corpus(out)
    with pytest.raises(CorpusError, match="--resume"):
        build_corpus(mini_config(), out, seed=3, jobs=1, progress=False)

    calls["n"] = -100  # no more interruptions
    summary = build_corpus(mini_config(), out, seed=3, jobs=1, resume=True, progress=False)
    assert (summary.n_reused, summary.n_synthesized) == (5, 7)
    assert calls["n"] == -100 + 7  # finished utterances were not synthesized again
    assert _files(out) == _files(mini_reference)
    load_corpus(out)


def test_resume_of_a_complete_corpus_synthesizes_nothing(
        mini_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(mini_reference, out)
    summary = build_corpus(mini_config(), out, seed=3, jobs=1, resume=True, progress=False)
    assert summary.n_synthesized == 0 and summary.n_reused == 12
    assert _files(out) == _files(mini_reference)


# ------------------------------------------------------------------------------- bad input


def test_output_dir_with_a_different_corpus_is_refused(
        mini_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(mini_reference, out)
    with pytest.raises(CorpusError, match="different corpus") as info:
        build_corpus(mini_config(), out, seed=99, jobs=1, resume=True, progress=False)
    assert str(out) in str(info.value)


def test_non_empty_dir_without_corpus_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty"):
        build_corpus(mini_config(), tmp_path, seed=0, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_unknown_accent_or_planted_accent_is_refused() -> None:
    with pytest.raises(CorpusError, match="en-xx"):
        SpeakerConfig(n_train=4, n_dev=1, n_test=1, accents=("en-us", "en-xx"),
                      accent_weights=(1.0, 1.0), under_represented=())
    with pytest.raises(CorpusError, match="en-gb-scotland"):
        SpeakerConfig(n_train=4, n_dev=1, n_test=1, accents=("en-us",), accent_weights=(1.0,))


def test_unknown_voice_variant_fails_before_any_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fairstream.data import speakers

    monkeypatch.setattr(speakers, "FEMALE_VARIANTS", ("nosuchvoice",) * 5)
    monkeypatch.setattr(speakers, "MALE_VARIANTS", ("nosuchvoice",) * 8)
    with pytest.raises(CorpusError, match="nosuchvoice"):
        build_corpus(mini_config(), tmp_path / "x", seed=0, progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("damage", ["no_corpus_json", "incomplete", "no_manifest", "not_a_dir"])
def test_load_corpus_names_what_is_wrong(mini_reference: Path, tmp_path: Path, damage: str) -> None:
    out = tmp_path / "c"
    shutil.copytree(mini_reference, out)
    if damage == "no_corpus_json":
        (out / "corpus.json").unlink()
        expected = "corpus.json"
    elif damage == "incomplete":
        info = json.loads((out / "corpus.json").read_text())
        (out / "corpus.json").write_text(json.dumps({**info, "complete": False}))
        expected = "incomplete"
    elif damage == "no_manifest":
        (out / "manifests" / "dev_supervisions.jsonl.gz").unlink()
        expected = "dev_supervisions"
    else:
        out = tmp_path / "missing"
        expected = "does not exist"
    with pytest.raises(CorpusError, match=expected):
        load_corpus(out)


# ------------------------------------------------------------------------------ signal chain


def test_noise_types_have_unit_rms_and_expected_tilt() -> None:
    sr = 16000
    low_high = {}
    for kind in NOISE_TYPES:
        x = make_noise(kind, sr * 2, sr, np.random.default_rng(0))
        assert x.shape == (sr * 2,)
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / sr)
        low_high[kind] = spec[(f > 100) & (f < 500)].mean() / spec[(f > 4000) & (f < 7000)].mean()
    assert 0.5 < low_high["white"] < 2
    assert low_high["brown"] > low_high["pink"] > 5 * low_high["white"]
    with pytest.raises(CorpusError, match="thunder"):
        make_noise("thunder", 100, sr, np.random.default_rng(0))


def test_snr_and_telephone_band_limit() -> None:
    config = get_preset("tiny")
    spk = sample_speakers(config.speakers, seed=0)[0]
    spec = plan_utterances(config, [spk], seed=0)[0]
    synth = EspeakSynthesizer()
    quiet = replace(spec, snr_db=40.0, noise_type="white", telephone=False)
    noisy = replace(spec, snr_db=5.0, noise_type="white", telephone=False)
    phone = replace(spec, snr_db=40.0, noise_type="white", telephone=True)
    lead = int(spec.lead_silence * 16000)

    def floor_ratio(x: np.ndarray) -> float:  # noise power in the leading silence vs whole mix
        return float(np.mean(x[: lead - 400] ** 2) / np.mean(x**2))

    noisy_floor = floor_ratio(render_utterance(noisy, synth, 16000))
    assert noisy_floor > 100 * floor_ratio(render_utterance(quiet, synth, 16000))
    x = render_utterance(phone, synth, 16000)
    spec_x = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    assert spec_x[f > 5000].sum() < 1e-3 * spec_x.sum()
    assert np.abs(x).max() <= 0.98 + 1e-6


# ------------------------------------------------------------------ layout: version, splits


# Computed with the release before corpus.json versions were checked: an unchanged spec keeps
# its fingerprint, so `--resume` still accepts builds made before.
@pytest.mark.parametrize(("make_config", "seed", "fingerprint"), [
    (mini_config, 3, "7beb19987ad1969fabba9d2ed16dce5793757229f3be2f0ae6e989aaa9c17a3f"),
    (lambda: get_preset("tiny"), 0,
     "91e9c466a632905d5a713a656027bf02c75ba49e301794ada599108da051bac0"),
    (lambda: get_preset("demo"), 0,
     "63996e0860df1d2a4b811e0f6e72f46b2eb7a44ed1b44e2879405bb0e6f0984c"),
])
def test_fingerprint_of_an_unchanged_spec_is_pinned(
        make_config: Callable[[], CorpusConfig], seed: int, fingerprint: str) -> None:
    assert make_config().fingerprint(seed) == fingerprint


def test_corpus_json_lists_splits_and_version(mini_reference: Path) -> None:
    info = json.loads((mini_reference / "corpus.json").read_text())
    assert (info["format"], info["version"]) == ("fairstream-corpus", 1)
    assert info["splits"] == ["train", "dev", "test"] == list(info["counts"])
    assert info["fingerprint"] == mini_config().fingerprint(3)
    assert load_corpus(mini_reference).version == 1


@pytest.mark.parametrize("version", [2, 99, "1.1", None, True])
def test_newer_or_unknown_version_is_a_named_error(mini_reference: Path, tmp_path: Path,
                                                   version: object) -> None:
    out = tmp_path / "c"
    shutil.copytree(mini_reference, out)
    info = json.loads((out / "corpus.json").read_text())
    (out / "corpus.json").write_text(json.dumps({**info, "version": version}))
    with pytest.raises(CorpusVersionError) as err:
        load_corpus(out)
    assert isinstance(err.value, CorpusError)
    assert err.value.found == version and err.value.readable == (1,)
    assert repr(version) in str(err.value) and "reads version 1" in str(err.value)
    assert ("newer fairstream" in str(err.value)) == (version in (2, 99))
    with pytest.raises(CorpusVersionError):  # a resume does not write over it either
        build_corpus(mini_config(), out, seed=3, jobs=1, resume=True, progress=False)


def test_corpus_json_of_the_previous_release_still_loads_and_resumes(mini_reference: Path,
                                                                      tmp_path: Path) -> None:
    """Before versions were checked, corpus.json could lack "version" and had no "splits"."""
    out = tmp_path / "old"
    shutil.copytree(mini_reference, out)
    info = json.loads((out / "corpus.json").read_text())
    old = {k: v for k, v in info.items() if k not in ("version", "splits")}
    (out / "corpus.json").write_text(json.dumps(old, indent=2) + "\n")
    corpus = load_corpus(out)
    assert corpus.version == 1 and corpus.splits == ["train", "dev", "test"]
    summary = build_corpus(mini_config(), out, seed=3, jobs=1, resume=True, progress=False)
    assert summary.n_synthesized == 0
    assert _files(out) == _files(mini_reference)


def test_a_spec_with_an_extra_split(mini_reference: Path, tmp_path: Path) -> None:
    audit = SplitSpec("audit", speakers=3, utterances_per_speaker=2)
    config = replace(mini_config(), extra_splits=(audit,))
    assert config.splits == ("train", "dev", "test", "audit") and config.n_utterances == 18
    out = tmp_path / "extra"
    summary = build_corpus(config, out, seed=3, jobs=1, progress=False)
    assert summary.n_utterances == 18 and set(summary.hours_by_split) == set(config.splits)

    corpus = load_corpus(out)
    assert corpus.splits == ["train", "dev", "test", "audit"]
    counts = corpus.info["counts"]["audit"]
    assert (counts["speakers"], counts["utterances"]) == (3, 6) and counts["hours"] > 0
    cuts = corpus.cuts("audit")
    assert len(cuts) == 6
    audit_speakers = {c.supervisions[0].speaker for c in cuts}
    others = set(corpus.speakers.loc[corpus.speakers["split"] != "audit", "speaker_id"])
    assert len(audit_speakers) == 3 and not audit_speakers & others
    assert "| accent | train | dev | test | audit |" in (out / "corpus_card.md").read_text()
    # the default splits are those of the same spec without the extra split, byte for byte
    for split in ("train", "dev", "test"):
        for kind in ("recordings", "supervisions", "cuts"):
            name = f"manifests/{split}_{kind}.jsonl.gz"
            assert (out / name).read_bytes() == (mini_reference / name).read_bytes()
    assert config.fingerprint(3) != mini_config().fingerprint(3)


def test_resume_extends_a_complete_corpus_with_new_extra_splits(mini_reference: Path,
                                                                  tmp_path: Path) -> None:
    """A corpus built before its preset gained an extra split is extended, not rebuilt."""
    out = tmp_path / "grow"
    shutil.copytree(mini_reference, out)
    before = {name: (out / name).read_bytes() for name in _files(out)
              if name.startswith(("manifests/", "audio/")) or name == "cmvn.json"}
    config = replace(mini_config(), extra_splits=(SplitSpec("audit", speakers=2,
                                                            utterances_per_speaker=2),))
    with pytest.raises(CorpusError, match="different corpus"):  # not without --resume
        build_corpus(config, out, seed=3, jobs=1, progress=False)
    summary = build_corpus(config, out, seed=3, jobs=1, resume=True, progress=False)
    assert summary.n_synthesized == 4 and summary.n_reused == mini_config().n_utterances
    corpus = load_corpus(out)
    assert corpus.splits == ["train", "dev", "test", "audit"] and len(corpus.cuts("audit")) == 4
    assert corpus.info["fingerprint"] == config.fingerprint(3)
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name
    # another seed or setting is still a different corpus, with or without resume
    with pytest.raises(CorpusError, match="different corpus"):
        build_corpus(config, out, seed=4, jobs=1, resume=True, progress=False)
    smaller = replace(config, extra_splits=())
    with pytest.raises(CorpusError, match="different corpus"):
        build_corpus(smaller, out, seed=3, jobs=1, resume=True, progress=False)


def test_bad_extra_splits_are_refused() -> None:
    with pytest.raises(CorpusError, match="'Audit Set'"):
        SplitSpec("Audit Set", speakers=1, utterances_per_speaker=1)
    with pytest.raises(CorpusError, match="default splits"):
        SplitSpec("dev", speakers=1, utterances_per_speaker=1)
    with pytest.raises(CorpusError, match="at least one"):
        SplitSpec("audit", speakers=0, utterances_per_speaker=1)
    with pytest.raises(CorpusError, match="repeat"):
        replace(mini_config(), extra_splits=(SplitSpec("a", 1, 1), SplitSpec("a", 2, 1)))


def test_clean_text_preset_has_its_own_pinned_fingerprint() -> None:
    """``demo-clean`` is ``demo`` with clean test text; the option enters the fingerprint."""
    clean = get_preset("demo-clean")
    assert replace(clean, preset="demo", text_holdout=None, extra_splits=()) == get_preset("demo")
    assert [(x.name, x.speakers, x.utterances_per_speaker) for x in clean.extra_splits] == [
        ("audit", 400, 4)]
    # without its audit split: the fingerprint of the corpus built before the split existed,
    # which a resumed build extends
    assert replace(clean, extra_splits=()).fingerprint(0) == (
        "9015c720fef000d20efa885168bfbb06c95f14e183728f4f246858bdde5f48cd")
    assert clean.fingerprint(0) == (
        "b22336d0de2893c62f4120f8d0bfe6198b57b39ec85068ce84169226c5d8f526")
