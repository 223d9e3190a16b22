"""Tokenizer: exact round trips for bpe/unigram/char, blank at id 0, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from audio_factory import WORDS

from fairstream.data.text import normalize
from fairstream.errors import InputDataError
from fairstream.tokenizer import NORMALIZED_ALPHABET, Tokenizer

RNG = np.random.default_rng(0)
TEXTS = [" ".join(RNG.choice(WORDS, size=int(RNG.integers(2, 12)))) for _ in range(400)]
UNSEEN = ["Zebra QUIZ: 42 jumped, x's!", "quick   brown\tfox", "0123456789 '", "z"]

CASES = [("bpe", 120), ("unigram", 60), ("char", 0)]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def tok(request, tmp_path_factory) -> Tokenizer:
    model_type, vocab = request.param
    out = tmp_path_factory.mktemp(model_type)
    Tokenizer.train(TEXTS, out, vocab_size=vocab, model_type=model_type)
    return Tokenizer.load(out)


def test_round_trip_of_training_and_unseen_text(tok: Tokenizer) -> None:
    for text in TEXTS + UNSEEN:
        ids = tok.encode(text)
        assert tok.decode(ids) == normalize(text), text


def test_blank_is_id_zero_and_never_emitted(tok: Tokenizer) -> None:
    assert tok.blank_id == 0
    assert tok.id_to_piece(0) == "<blk>"
    for text in TEXTS[:50] + UNSEEN:
        ids = tok.encode(text)
        assert ids and min(ids) > 0 and max(ids) < tok.vocab_size


def test_decode_drops_blanks_and_rejects_out_of_range(tok: Tokenizer) -> None:
    ids = tok.encode("set a timer")
    with_blanks = [0] + [i for t in ids for i in (t, 0)]
    assert tok.decode(with_blanks) == "set a timer"
    with pytest.raises(InputDataError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_vocab_size_is_what_was_asked(tmp_path) -> None:
    bpe = Tokenizer.train(TEXTS, tmp_path / "b", vocab_size=100, model_type="bpe")
    assert bpe.vocab_size == 100
    char = Tokenizer.train(TEXTS, tmp_path / "c", vocab_size=5000, model_type="char")
    assert char.vocab_size == 2 + len(NORMALIZED_ALPHABET)  # blank, word mark, characters


def test_training_is_deterministic(tmp_path) -> None:
    a = Tokenizer.train(TEXTS, tmp_path / "a", vocab_size=60, model_type="unigram")
    b = Tokenizer.train(TEXTS, tmp_path / "b", vocab_size=60, model_type="unigram")
    model_a, model_b = (tmp_path / d / "tokenizer.model" for d in ("a", "b"))
    assert model_a.read_bytes() == model_b.read_bytes()
    assert a.encode(TEXTS[0]) == b.encode(TEXTS[0])


@pytest.mark.parametrize(
    ("texts", "kwargs", "match"),
    [
        (TEXTS + ["  "], {}, "transcript #400 is empty"),
        (TEXTS + ["?!"], {}, "transcript #400 is empty after normalization"),
        (TEXTS[:3] + [b"caf\xe9"], {}, "transcript #3 is not valid UTF-8"),
        ([], {}, "no transcripts"),
        (TEXTS[:20], {"vocab_size": 5000}, "too large"),
        (TEXTS, {"vocab_size": 10}, "below the minimum"),
        (TEXTS, {"model_type": "wordpiece"}, "unknown tokenizer model_type"),
    ],
)
def test_bad_training_input_is_named(tmp_path, texts, kwargs, match) -> None:
    kw = {"vocab_size": 100, "model_type": "bpe"} | kwargs
    with pytest.raises(InputDataError, match=match):
        Tokenizer.train(texts, tmp_path, **kw)


def test_bytes_transcripts_are_decoded_as_utf8(tmp_path) -> None:
    tok = Tokenizer.train([t.encode() for t in TEXTS], tmp_path, vocab_size=100, model_type="bpe")
    assert tok.decode(tok.encode(TEXTS[1])) == TEXTS[1]


def test_load_errors(tmp_path) -> None:
    with pytest.raises(InputDataError, match="does not exist"):
        Tokenizer.load(tmp_path / "nope")
    (tmp_path / "tokenizer.json").write_text('{"format": "other"}')
    with pytest.raises(InputDataError, match="not a fairstream tokenizer"):
        Tokenizer.load(tmp_path)
    Tokenizer.train(TEXTS, tmp_path / "t", vocab_size=100, model_type="bpe")
    (tmp_path / "t" / "tokenizer.model").write_bytes(b"garbage")
    with pytest.raises(InputDataError, match="corrupt"):
        Tokenizer.load(tmp_path / "t")


def test_special_tokens_follow_the_vocabulary_and_round_trip(tok: Tokenizer, tmp_path) -> None:
    ext = tok.with_special_tokens(["<sot>", "<eot>"])
    v = tok.vocab_size
    assert ext.vocab_size == v + 2 and ext.special_tokens == ("<sot>", "<eot>")
    assert tok.special_tokens == () and tok.vocab_size == v  # the original is unchanged
    ids = ext.encode("<sot> Set a timer <eot><sot>play music<eot>")
    assert ids == [v, *tok.encode("set a timer"), v + 1, v, *tok.encode("play music"), v + 1]
    assert ext.decode([0, *ids]) == "<sot> set a timer <eot> <sot> play music <eot>"
    assert [ext.id_to_piece(i) for i in (v, v + 1)] == ["<sot>", "<eot>"]
    for text in TEXTS[:20]:  # text without special tokens encodes as before
        assert ext.encode(text) == tok.encode(text)
    loaded = Tokenizer.load(ext.save(tmp_path / "ext"))
    assert loaded.special_tokens == ext.special_tokens
    assert loaded.encode("<eot> a") == ext.encode("<eot> a")
    again = loaded.with_special_tokens(["<sc>"])
    assert again.encode("<sc>") == [v + 2]


def test_save_without_special_tokens_writes_what_training_wrote(tok: Tokenizer, tmp_path) -> None:
    assert tok.path is not None
    out = tok.save(tmp_path / "copy")
    for name in ("tokenizer.json", "tokenizer.model"):
        if (tok.path / name).exists():
            assert (out / name).read_bytes() == (tok.path / name).read_bytes()


@pytest.mark.parametrize(
    ("tokens", "match"),
    [
        (["sot"], "must look like <name>"),
        (["<SOT>"], "must look like <name>"),
        (["<sot>", "<sot>"], "already in the vocabulary"),
        (["<blk>"], "already in the vocabulary"),
    ],
)
def test_bad_special_tokens_are_named(tok: Tokenizer, tokens, match) -> None:
    with pytest.raises(InputDataError, match=match):
        tok.with_special_tokens(tokens)
