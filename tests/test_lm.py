"""Token n-gram LM: proper distributions, hand-computed Kneser-Ney values, files, errors."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fairstream.errors import InputDataError
from fairstream.lm import NgramLM

V = 6  # blank 0, tokens 1..5, end-of-sentence at index 6
CORPUS = [[1, 2, 3], [1, 2, 4], [2, 3], [5, 1, 2, 3], [1, 3]]


@pytest.mark.parametrize("order", [2, 3, 5])
def test_every_distribution_sums_to_one_and_blank_has_no_mass(order: int) -> None:
    lm = NgramLM.fit(CORPUS, vocab_size=V, order=order)
    rng = np.random.default_rng(0)
    contexts = [lm.initial_context(), (-1,) * (order - 2) + (1,)]
    contexts += [tuple(int(x) for x in rng.integers(1, V, order - 1)) for _ in range(20)]
    for ctx in contexts:
        p = np.exp(lm.log_probs(ctx))
        assert p.shape == (V + 1,)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert p[0] == 0.0 and (p[1:] > 0).all()


def test_bigram_matches_the_kneser_ney_formula_by_hand() -> None:
    lm = NgramLM.fit(CORPUS, vocab_size=V, order=2)
    # bigram counts after token 2: 2->3 three times, 2->4 once
    c23, c2, types_after_2 = 3, 4, 2
    grams: dict[tuple[int, int], int] = {}
    for s in CORPUS:
        padded = [-1, *s, V]
        for a, b in itertools.pairwise(padded):
            grams[(a, b)] = grams.get((a, b), 0) + 1
    n1 = sum(1 for c in grams.values() if c == 1)
    n2 = sum(1 for c in grams.values() if c == 2)
    d2 = min(max(n1 / (n1 + 2 * n2), 0.05), 0.95)  # discounts are kept inside [0.05, 0.95]
    # unigram continuation counts: distinct left neighbours of each token
    cont = {w: len({a for (a, b) in grams if b == w}) for w in range(1, V + 1)}
    total = sum(cont.values())
    m1 = sum(1 for c in cont.values() if c == 1)
    m2 = sum(1 for c in cont.values() if c == 2)
    d1 = min(max(m1 / (m1 + 2 * m2), 0.05), 0.95)
    seen = sum(1 for c in cont.values() if c > 0)
    p1_3 = max(cont[3] - d1, 0) / total + d1 * seen / total / V  # V outputs: 5 tokens + eos
    expected = max(c23 - d2, 0) / c2 + d2 * types_after_2 / c2 * p1_3
    assert math.exp(lm.log_probs((2,))[3]) == pytest.approx(expected, rel=1e-12)
    assert lm.score([2, 3]) == pytest.approx(lm.log_probs((-1,))[2] + lm.log_probs((2,))[3]
                                             + lm.log_probs((3,))[lm.eos_id])


def test_in_domain_text_is_likelier_than_shuffled_text() -> None:
    lm = NgramLM.fit(CORPUS * 3, vocab_size=V, order=3)
    assert lm.perplexity(CORPUS) < lm.perplexity([s[::-1] for s in CORPUS])
    assert lm.perplexity(CORPUS) < V  # better than uniform


def test_save_load_roundtrip(tmp_path: Path) -> None:
    lm = NgramLM.fit(CORPUS, vocab_size=V, order=4)
    path = lm.save(tmp_path / "lm.json")
    again = NgramLM.load(path)
    assert (again.order, again.vocab_size, again.blank_id) == (4, V, 0)
    for ctx in [again.initial_context(), (1, 2, 3), (5, 5, 5)]:
        np.testing.assert_array_equal(again.log_probs(ctx), lm.log_probs(ctx))


def test_fit_texts_uses_the_tokenizer(tmp_path: Path) -> None:
    from fairstream.tokenizer import Tokenizer

    tok = Tokenizer.train(["turn on the lights", "turn off the fan"], tmp_path / "tok",
                          model_type="char")
    lm = NgramLM.fit_texts(["Turn ON the lights!", "", "turn off the fan"], tok, order=3)
    assert lm.vocab_size == tok.vocab_size
    assert lm.score(tok.encode("turn on the lights")) > lm.score(tok.encode("thgil eht no nrut"))


def test_bad_input_raises_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="order must be >= 2"):
        NgramLM.fit(CORPUS, vocab_size=V, order=1)
    with pytest.raises(InputDataError, match="zero sentences"):
        NgramLM.fit([], vocab_size=V)
    with pytest.raises(InputDataError, match="sentence 1: token id 9"):
        NgramLM.fit([[1], [9]], vocab_size=V)
    with pytest.raises(InputDataError, match="sentence 0: token id 0"):
        NgramLM.fit([[0, 1]], vocab_size=V)  # the blank is not text
    lm = NgramLM.fit(CORPUS, vocab_size=V, order=3)
    with pytest.raises(InputDataError, match="context must hold 2 tokens"):
        lm.log_probs((1,))
    with pytest.raises(InputDataError, match="does not exist"):
        NgramLM.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputDataError, match="not valid JSON"):
        NgramLM.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "arpa"}))
    with pytest.raises(InputDataError, match="not a fairstream token n-gram"):
        NgramLM.load(tmp_path / "other.json")


def test_the_distribution_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from fairstream.lm import ngram

    monkeypatch.setattr(ngram, "_CACHE_LIMIT", 3)
    lm = NgramLM.fit(CORPUS, vocab_size=V, order=2)
    first = lm.log_probs((1,)).copy()
    for t in range(1, V):
        lm.log_probs((t,))
    assert len(lm._cache) <= 3
    np.testing.assert_array_equal(lm.log_probs((1,)), first)  # recomputed identically


def test_trigram_matches_a_reference_written_from_the_definitions() -> None:
    corpus = [*CORPUS, [3, 3, 1], [1, 2, 3], [4], [2, 5, 2, 3]]
    lm = NgramLM.fit(corpus, vocab_size=V, order=3)
    bos, eos = -1, V
    c3: dict[tuple[int, ...], int] = {}
    for s in corpus:
        p = [bos, bos, *s, eos]
        for i in range(2, len(p)):
            c3[tuple(p[i - 2 : i + 1])] = c3.get(tuple(p[i - 2 : i + 1]), 0) + 1
    c2: dict[tuple[int, ...], int] = {}
    for (u, v, w), c in c3.items():  # continuation counts; sentence-start grams keep counts
        c2[(v, w)] = c2.get((v, w), 0) + (c if v == bos else 1)
    c1: dict[tuple[int, ...], int] = {}
    for (_v, w) in c2:
        c1[(w,)] = c1.get((w,), 0) + 1

    def discount(counts: dict[tuple[int, ...], int]) -> float:
        n1 = sum(1 for c in counts.values() if c == 1)
        n2 = sum(1 for c in counts.values() if c == 2)
        return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95)

    def level(counts: dict[tuple[int, ...], int], ctx: tuple[int, ...], w: int,
              lower: float) -> float:
        follow = {g[-1]: c for g, c in counts.items() if g[:-1] == ctx}
        if not follow:
            return lower
        total, d = sum(follow.values()), discount(counts)
        return max(follow.get(w, 0) - d, 0) / total + d * len(follow) / total * lower

    def reference(u: int, v: int, w: int) -> float:
        p1 = level(c1, (), w, 1.0 / V)
        p2 = level(c2, (v,), w, p1)
        return level(c3, (u, v), w, p2)

    for ctx in [(bos, bos), (bos, 1), (1, 2), (2, 3), (3, 3), (5, 5), (4, 1)]:
        for w in [1, 2, 3, 4, 5, eos]:
            assert math.exp(lm.log_probs(ctx)[w]) == pytest.approx(reference(*ctx, w), rel=1e-12)
