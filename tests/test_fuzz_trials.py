"""Fuzzing the VoxCeleb trial-list reader (fairstream.data.trials.read_trials)."""

from __future__ import annotations

from _fuzz import FUZZ, ident, mostly, nasty_text, random_or_mutated, read_written
from hypothesis import given
from hypothesis import strategies as st

from fairstream.data.trials import read_trials

trial_line = st.tuples(mostly(st.sampled_from(["0", "1"]), nasty_text),
                       ident.map(lambda s: f"a/{s}.wav"), ident.map(lambda s: f"b/{s}.wav"))
trial_file = st.lists(trial_line, max_size=6).map(
    lambda rows: "\n".join(" ".join(r) for r in rows).encode("utf-8")).flatmap(random_or_mutated)


@FUZZ
@given(trial_file)
def test_trial_lists_parse_or_name_the_line(content: bytes) -> None:
    trials = read_written(read_trials, "veri_test.txt", content)
    if trials is not None:  # every non-blank line became one trial
        lines = [ln for ln in content.decode("utf-8-sig").split("\n") if ln.split()]
        assert len(trials) == len(lines)
        assert all(t.label in (0, 1) and t.enroll and t.test for t in trials)
