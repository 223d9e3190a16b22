"""A checkpoint trained by an earlier release decodes to the same hypotheses today.

``tests/data/golden`` holds a tiny transducer (500 steps on the ``tiny`` preset, seed 0), a
token trigram LM fitted on that corpus's training transcripts, eight test utterances and the
hypotheses that release produced for them: greedy and beam search + LM, offline and streaming
(160 ms chunks). Any change to loading, features, search or the streaming path that alters a
single hypothesis fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "data" / "golden"


def _cuts(refs: dict[str, dict[str, str]]):  # type: ignore[no-untyped-def]
    from lhotse import CutSet, Recording, SupervisionSegment

    cuts = []
    for cid, r in refs.items():
        rec = Recording.from_file(GOLDEN / f"{cid}.wav", recording_id=cid)
        cut = rec.to_cut()
        cut.supervisions = [SupervisionSegment(id=cid, recording_id=cid, start=0,
                                               duration=rec.duration, text=r["text"],
                                               speaker=r["speaker"])]
        cuts.append(cut)
    return CutSet.from_cuts(cuts)


@pytest.mark.parametrize("name", ["greedy_offline", "greedy_streaming", "beam_lm_offline",
                                  "beam_lm_streaming"])
def test_golden_checkpoint_decodes_identically(name: str) -> None:
    from fairstream.inference import SearchConfig, decode_cuts, load_transducer
    from fairstream.lm.ngram import NgramLM

    expected = json.loads((GOLDEN / "expected.json").read_text())
    loaded = load_transducer(GOLDEN / "tiny_transducer.pt")
    kwargs: dict[str, object] = {"streaming": name.endswith("streaming")}
    if name.startswith("beam"):
        kwargs["search"] = SearchConfig(method="beam", **expected["search"])
        kwargs["lm"] = NgramLM.load(GOLDEN / "lm.json")
    df = decode_cuts(loaded.model, loaded.tokenizer, loaded.cmvn, _cuts(expected["refs"]),
                     progress=False, **kwargs)  # type: ignore[arg-type]
    assert dict(zip(df.utt_id, df.hyp)) == expected["hyps"][name]
    assert any(expected["hyps"][name].values())  # the fixture is not all-empty
