"""Clean test text: open-slot values held out of training, evaluation sentences unseen in it.

With :class:`~fairstream.data.presets.TextHoldout` set on a corpus config, the build

1. holds out a share of every open slot's values (:data:`~fairstream.data.templates.OPEN_SLOTS`:
   first names, artists, songs, cities, groceries), see :func:`choose_heldout_slots`. Only
   *unambiguous* values are held out: a value whose words also occur inside a value of another
   list (the song ``yellow`` and the color ``yellow``, the city ``jackson`` and the artist
   ``michael jackson``, the name and the city ``charlotte``) stays in training, so a held-out
   value found in a transcript is that slot's value and not a word of some other phrase;
2. draws training sentences that contain no held-out value as a whole-word phrase;
3. draws evaluation sentences (every split but ``train``) whose normalized text is not among the
   training sentences, from all slot values.

Utterance ``i`` first tries the generator seeded ``(seed, 202, i)``, which gives the sentence
it has without the option, then ``(seed, 202, i, attempt)`` for attempt 1, 2, ... until the
sentence is allowed, so the build stays a pure function of ``(config, seed)``. A consequence of
(3): fixed sentences without slots (``pause the timer``) are practically always in training, so
the evaluation splits hardly have them.

Example::

    heldout = choose_heldout_slots(0.2, seed=0)      # {"first_name": ("mary", ...), ...}
    PhraseMatcher(heldout["city"]).mask("will it rain in new york".split())
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np

from fairstream.data.presets import TextHoldout
from fairstream.data.templates import OPEN_SLOTS, SLOT_LISTS, Request, generate_request
from fairstream.data.text import normalize
from fairstream.errors import CorpusError

__all__ = [
    "MAX_ATTEMPTS",
    "PhraseMatcher",
    "choose_heldout_slots",
    "draw_requests",
    "eligible_values",
]

#: Draws an utterance may take before the build gives up with a :class:`CorpusError`.
MAX_ATTEMPTS = 1000


class PhraseMatcher:
    """Finds whole-word occurrences of a set of phrases in a word sequence.

    Phrases and texts are compared after :func:`~fairstream.data.text.normalize`; a phrase
    matches where its words occur contiguously (``new york`` in ``rain in new york today``,
    never ``york`` alone).

    Args:
        phrases: the phrases (empty ones are ignored).
    """

    def __init__(self, phrases: Iterable[str]) -> None:
        words = (tuple(normalize(p).split()) for p in phrases)
        self.phrases: frozenset[tuple[str, ...]] = frozenset(w for w in words if w)
        self._longest = max(map(len, self.phrases), default=0)

    def mask(self, words: Sequence[str]) -> list[bool]:
        """One flag per word: ``True`` where the word lies inside an occurrence of a phrase."""
        out = [False] * len(words)
        for start in range(len(words)):
            for n in range(1, min(self._longest, len(words) - start) + 1):
                if tuple(words[start:start + n]) in self.phrases:
                    out[start:start + n] = [True] * n
        return out

    def contains(self, text: str) -> bool:
        """Whether the normalized ``text`` contains any of the phrases."""
        return any(self.mask(normalize(text).split()))


def _inside(inner: str, outer: str) -> bool:
    return f" {inner} " in f" {outer} "


@lru_cache(maxsize=None)
def eligible_values(slot: str) -> tuple[str, ...]:
    """The values of open slot ``slot`` that may be held out, distinct, in list order.

    A value is eligible unless its words occur (whole words, contiguously) inside a value of
    another slot list or inside a different value of the same list.

    Raises:
        CorpusError: ``slot`` is not an open slot.
    """
    try:
        values = OPEN_SLOTS[slot]
    except KeyError:
        raise CorpusError(f"unknown open slot {slot!r}; expected one of {list(OPEN_SLOTS)}")
    eligible = []
    for value in dict.fromkeys(values):
        clash = any(_inside(value, other) for seq in SLOT_LISTS for other in seq
                    if seq is not values or other != value)
        if not clash:
            eligible.append(value)
    return tuple(eligible)


def choose_heldout_slots(share: float, seed: int) -> dict[str, tuple[str, ...]]:
    """Open slot → the values held out of training, in list order.

    Each slot holds out ``round(share × its distinct values)`` values, drawn at random (from a
    generator seeded with ``(seed, 203, slot number)``) among its :func:`eligible_values`; all
    eligible values when there are fewer.
    """
    out: dict[str, tuple[str, ...]] = {}
    for number, (slot, values) in enumerate(OPEN_SLOTS.items()):
        eligible = eligible_values(slot)
        n = min(round(share * len(set(values))), len(eligible))
        rng = np.random.default_rng([seed, 203, number])
        picked = sorted(int(k) for k in rng.choice(len(eligible), size=n, replace=False))
        out[slot] = tuple(eligible[k] for k in picked)
    return out


def _request(seed: int, index: int, attempt: int) -> Request:
    key = [seed, 202, index] if attempt == 0 else [seed, 202, index, attempt]
    return generate_request(np.random.default_rng(key))


def draw_requests(splits: Sequence[str], seed: int, holdout: TextHoldout | None,
                  heldout: Mapping[str, Sequence[str]]) -> list[Request]:
    """The request of every utterance; ``splits[i]`` is the split of utterance ``i``.

    Without ``holdout``, utterance ``i`` says ``generate_request`` seeded ``(seed, 202, i)``.
    With it, training utterances redraw while their sentence contains a value of ``heldout``
    and, if ``holdout.disjoint_sentences``, other utterances redraw while their normalized
    sentence is a training sentence.

    Raises:
        CorpusError: an utterance found no allowed sentence in :data:`MAX_ATTEMPTS` draws.
    """
    if holdout is None:
        return [_request(seed, i, 0) for i in range(len(splits))]
    matcher = PhraseMatcher(v for values in heldout.values() for v in values)
    out: dict[int, Request] = {}
    train_texts: set[str] = set()
    order = ([i for i, s in enumerate(splits) if s == "train"]
             + [i for i, s in enumerate(splits) if s != "train"])
    for i in order:
        is_train = splits[i] == "train"
        for attempt in range(MAX_ATTEMPTS):
            request = _request(seed, i, attempt)
            text = normalize(request.text)
            if is_train and not matcher.contains(text):
                train_texts.add(text)
                break
            if not is_train and not (holdout.disjoint_sentences and text in train_texts):
                break
        else:
            raise CorpusError(f"utterance {i} ({splits[i]}): no sentence allowed by the text "
                              f"hold-out in {MAX_ATTEMPTS} draws")
        out[i] = request
    return [out[i] for i in range(len(splits))]
