"""Clean test text: evaluation sentences unseen in training, held-out slot values, their score."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from fairstream.data.corpus import load_corpus
from fairstream.data.holdout import (
    PhraseMatcher,
    choose_heldout_slots,
    draw_requests,
    eligible_values,
)
from fairstream.data.layout import HELDOUT_SLOTS_JSON, read_heldout_slots
from fairstream.data.presets import PRESETS, CorpusConfig, TextHoldout, get_preset
from fairstream.data.speakers import sample_speakers
from fairstream.data.synthesis import UtteranceSpec, build_corpus, plan_utterances
from fairstream.data.templates import OPEN_SLOTS
from fairstream.data.text import normalize
from fairstream.errors import CorpusError
from fairstream.metrics.heldout import HeldoutSlotScore, heldout_slot_score


def tiny_clean() -> CorpusConfig:
    return replace(get_preset("tiny"), preset="tiny-clean", text_holdout=TextHoldout())


def _plan(config: CorpusConfig, seed: int) -> list[UtteranceSpec]:
    return plan_utterances(config, sample_speakers(config.speakers, seed), seed)


def _check_clean(texts: dict[str, list[str]], heldout: dict[str, list[str]]) -> None:
    """No evaluation sentence in train, no held-out value in train, some in dev and test.

    About 12 % of evaluation sentences have a held-out value: the tiny preset's 24 dev
    sentences may have none, so small corpora are checked on dev and test together.
    """
    matcher = PhraseMatcher(v for values in heldout.values() for v in values)
    train = {normalize(t) for t in texts["train"]}
    assert not [t for t in train if matcher.contains(t)]
    for split in ("dev", "test"):
        assert not [t for t in texts[split] if normalize(t) in train], split
    evaluation = {"dev": texts["dev"], "test": texts["test"]}
    if len(texts["dev"]) < 100:
        evaluation = {"dev and test": texts["dev"] + texts["test"]}
    for split, sentences in evaluation.items():
        assert sum(matcher.contains(t) for t in sentences) >= 0.05 * len(sentences), split


@pytest.fixture(scope="module")
def clean_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "corpus"
    build_corpus(tiny_clean(), out, seed=0, jobs=1, progress=False)
    return out


# ---------------------------------------------------------------------------- the build


def test_tiny_corpus_with_clean_text(clean_corpus: Path) -> None:
    corpus = load_corpus(clean_corpus)
    texts = {s: [c.supervisions[0].text for c in corpus.cuts(s)] for s in corpus.splits}
    heldout = read_heldout_slots(clean_corpus)
    assert list(heldout) == list(OPEN_SLOTS)
    assert heldout == {k: list(v) for k, v in choose_heldout_slots(0.2, seed=0).items()}
    _check_clean(texts, heldout)

    info = corpus.info["text_holdout"]
    assert info["heldout_slots_file"] == HELDOUT_SLOTS_JSON
    assert info["heldout_values"] == {k: len(v) for k, v in heldout.items()}
    assert info["utterances_whose_sentence_is_in_train"] == {"dev": 0, "test": 0}
    matcher = PhraseMatcher(v for values in heldout.values() for v in values)
    for split, n in info["utterances_with_heldout_values"].items():
        assert n == sum(matcher.contains(t) for t in texts[split])
    assert info["utterances_with_heldout_values"]["train"] == 0
    card = (clean_corpus / "corpus_card.md").read_text()
    assert "## Clean test text" in card and HELDOUT_SLOTS_JSON in card
    assert f"| song | {', '.join(heldout['song'])} |" in card
    assert corpus.info["fingerprint"] == tiny_clean().fingerprint(0)


def test_option_off_writes_no_holdout_files(tiny_corpus: Path) -> None:
    assert not (tiny_corpus / HELDOUT_SLOTS_JSON).exists()
    assert read_heldout_slots(tiny_corpus) == {}
    assert "text_holdout" not in json.loads((tiny_corpus / "corpus.json").read_text())
    assert "Clean test text" not in (tiny_corpus / "corpus_card.md").read_text()


# ------------------------------------------------------------------------------- the plan


def test_demo_clean_plan_is_clean_and_demo_is_not() -> None:
    for name, clean in (("demo-clean", True), ("demo", False)):
        specs = _plan(get_preset(name), seed=0)
        texts = {s: [x.text for x in specs if x.split == s] for s in ("train", "dev", "test")}
        train = {normalize(t) for t in texts["train"]}
        seen = sum(normalize(t) in train for t in texts["test"]) / len(texts["test"])
        if clean:
            _check_clean(texts, {k: list(v) for k, v in choose_heldout_slots(0.2, 0).items()})
        else:
            assert seen > 0.2  # what the option is for: 27.9 % of demo test sentences
    demo, clean_cfg = get_preset("demo"), get_preset("demo-clean")
    assert {k: v for k, v in clean_cfg.split_sizes().items() if k != "audit"} == \
        demo.split_sizes()
    assert clean_cfg.text_holdout == TextHoldout(disjoint_sentences=True, slot_share=0.2)


def test_clean_plan_is_deterministic_and_changes_with_the_seed() -> None:
    config = tiny_clean()
    assert _plan(config, 5) == _plan(config, 5)
    assert choose_heldout_slots(0.2, 5) == choose_heldout_slots(0.2, 5)
    assert choose_heldout_slots(0.2, 5) != choose_heldout_slots(0.2, 6)
    assert [s.text for s in _plan(config, 5)] != [s.text for s in _plan(config, 6)]


def test_clean_plan_keeps_everything_but_the_text() -> None:
    """Speakers, variation and noise are those of the same spec without the option."""
    plain, clean = _plan(get_preset("tiny"), 0), _plan(tiny_clean(), 0)
    strip = [{k: v for k, v in asdict(s).items() if k not in ("text", "domain")} for s in plain]
    assert strip == [{k: v for k, v in asdict(s).items() if k not in ("text", "domain")}
                     for s in clean]
    same = sum(a.text == b.text for a, b in zip(plain, clean))
    assert len(plain) / 2 < same < len(plain)  # first draws are kept where they are allowed


# Computed with the release before TextHoldout existed: the option off plans the same corpus.
@pytest.mark.parametrize(("name", "digest"), [
    ("tiny", "7184651bedddb8861fdcfc470af1bc0a49ca35dc59f9a9721075e90a1c61aca6"),
    ("demo", "faa6849102f432295e8707fdf8da02e4631d072a5ae9611193ed676aca54da0b"),
])
def test_option_off_plans_what_it_planned_before(name: str, digest: str) -> None:
    specs = _plan(get_preset(name), 0)
    payload = json.dumps([asdict(s) for s in specs], sort_keys=True).encode()
    assert hashlib.sha256(payload).hexdigest() == digest


def test_sentence_disjointness_alone_and_slots_alone() -> None:
    splits = ["train"] * 300 + ["test"] * 100
    heldout = choose_heldout_slots(0.2, 0)
    matcher = PhraseMatcher(v for values in heldout.values() for v in values)

    only_disjoint = draw_requests(splits, 0, TextHoldout(slot_share=0.0), {})
    train = {r.text for r in only_disjoint[:300]}
    assert not [r for r in only_disjoint[300:] if r.text in train]

    only_slots = draw_requests(splits, 0, TextHoldout(disjoint_sentences=False), heldout)
    assert not [r for r in only_slots[:300] if matcher.contains(r.text)]
    train = {r.text for r in only_slots[:300]}
    assert [r for r in only_slots[300:] if r.text in train]  # repeats are allowed here


def test_heldout_values_are_unambiguous_and_a_share_of_each_slot() -> None:
    heldout = choose_heldout_slots(0.2, 0)
    for slot, values in OPEN_SLOTS.items():
        assert len(heldout[slot]) == round(0.2 * len(set(values)))
        assert set(heldout[slot]) <= set(eligible_values(slot))
    assert "yellow" not in eligible_values("song")  # also a color
    assert "jackson" not in eligible_values("city")  # inside "michael jackson"
    assert "charlotte" not in eligible_values("first_name")  # also a city
    assert "taylor swift" in eligible_values("artist")
    assert choose_heldout_slots(0.0, 0) == {slot: () for slot in OPEN_SLOTS}


def test_fingerprint_carries_the_option_only_when_on() -> None:
    tiny = get_preset("tiny")
    assert "text_holdout" not in tiny.to_dict()
    assert tiny_clean().to_dict()["text_holdout"] == {"disjoint_sentences": True,
                                                      "slot_share": 0.2}
    other = replace(tiny_clean(), text_holdout=TextHoldout(slot_share=0.1))
    fingerprints = {c.fingerprint(0) for c in (tiny, tiny_clean(), other)}
    assert len(fingerprints) == 3


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="slot_share"):
        TextHoldout(slot_share=1.0)
    with pytest.raises(CorpusError, match="slot_share"):
        TextHoldout(slot_share=-0.1)
    with pytest.raises(CorpusError, match="nickname"):
        eligible_values("nickname")
    (tmp_path / HELDOUT_SLOTS_JSON).write_text('{"slots": {"song": "hello"}}')
    with pytest.raises(CorpusError, match=HELDOUT_SLOTS_JSON):
        read_heldout_slots(tmp_path)


def test_cli_offers_every_preset() -> None:
    from fairstream.cli.corpus import build

    (preset,) = [p for p in build.params if p.name == "preset"]
    assert set(preset.type.choices) == set(PRESETS)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ the score

HELDOUT = {"song": ["hello", "purple rain"], "city": ["new york"], "first_name": ["niamh"]}

SCORE_CASES = [
    # rows, (slot words, missed, utterances)
    ([("play hello by adele", "play hello by adele")], (1, 0, 1)),
    ([("play hello by adele", "play yellow by adele")], (1, 1, 1)),
    ([("will it rain in new york", "will it rain in new work")], (2, 1, 1)),
    ([("will it rain in new york", "will it rain in york")], (2, 1, 1)),
    ([("will it rain in new york", "")], (2, 2, 1)),
    ([("call niamh", "call niamh now please")], (1, 0, 1)),  # insertions do not count
    ([("call niamh", "call neve")], (1, 1, 1)),
    ([("what's the weather in boston", "what's the weather in austin")], (0, 0, 0)),
    ([("new music in york", "new music in york")], (0, 0, 0)),  # words, not the phrase
    ([("Play Purple-Rain!", "play purple rain"), ("call niamh", "call neve"),
      ("set a timer", "set a timer")], (3, 1, 2)),
]


@pytest.mark.parametrize(("rows", "expected"), SCORE_CASES)
def test_heldout_slot_score(rows: list[tuple[str, str]], expected: tuple[int, int, int]) -> None:
    score = heldout_slot_score(rows, HELDOUT)
    assert (score.slot_words, score.missed, score.utterances) == expected
    flat = heldout_slot_score(rows, [v for vs in HELDOUT.values() for v in vs])
    assert flat == score


def test_heldout_slot_error_rate() -> None:
    rows = [("play purple rain", "play purple rain"), ("call niamh", "call neve"),
            ("will it rain in new york", "will it rain in new york")]
    assert heldout_slot_score(rows, HELDOUT).error_rate == pytest.approx(1 / 5)
    assert math.isnan(heldout_slot_score([("set a timer", "set a")], HELDOUT).error_rate)
    assert math.isnan(HeldoutSlotScore().error_rate)
    assert heldout_slot_score([], HELDOUT) == HeldoutSlotScore()
    # normalized=True takes the texts as they are
    assert heldout_slot_score([("call Niamh", "call niamh")], HELDOUT,
                              normalized=True).slot_words == 0
