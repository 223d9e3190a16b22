"""The inference layer: no training imports, model errors are not data errors, the search a
checkpoint stores and the LM beside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fairstream.errors import CorpusError, InputDataError

GOLDEN = Path(__file__).parent / "data" / "golden"


def test_inference_does_not_import_training():
    code = ("import sys, fairstream.inference, fairstream.cli._search\n"
            "print([m for m in sys.modules if m.startswith('fairstream.training')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def golden():  # type: ignore[no-untyped-def]
    from lhotse import CutSet, Recording, SupervisionSegment

    from fairstream.inference import load_transducer

    rec = Recording.from_file(GOLDEN / "spk0032-000.wav", recording_id="spk0032-000")
    cut = rec.to_cut()
    cut.supervisions = [SupervisionSegment(id=cut.id, recording_id=rec.id, start=0,
                                           duration=rec.duration, text="a b", speaker="s")]
    return load_transducer(GOLDEN / "tiny_transducer.pt"), CutSet.from_cuts([cut])


@pytest.mark.parametrize("streaming", [False, True])
def test_a_model_error_surfaces_as_itself_not_as_bad_data(golden, monkeypatch, streaming):
    from fairstream.inference import decode_cuts

    loaded, cuts = golden

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("shape mismatch inside the model")

    monkeypatch.setattr(loaded.model.joiner, "joint", broken)
    with pytest.raises(RuntimeError, match="shape mismatch inside the model") as info:
        decode_cuts(loaded.model, loaded.tokenizer, loaded.cmvn, cuts, streaming=streaming,
                    on_error="skip", progress=False)
    assert not isinstance(info.value, CorpusError)


def test_bad_audio_is_a_corpus_error_naming_the_cut(golden, tmp_path):
    from lhotse import CutSet

    from fairstream.inference import decode_cuts

    loaded, cuts = golden
    data = [c.to_dict() for c in cuts]
    (tmp_path / "x.wav").write_bytes(b"RIFF not really")
    data[0]["recording"]["sources"][0]["source"] = str(tmp_path / "x.wav")
    with pytest.raises(CorpusError, match="cut spk0032-000"):
        decode_cuts(loaded.model, loaded.tokenizer, loaded.cmvn, CutSet.from_dicts(data),
                    streaming=True, progress=False)


@pytest.mark.parametrize("streaming", [False, True])
def test_a_cut_too_short_for_a_frame_is_bad_data_in_both_modes(golden, streaming):
    from lhotse import CutSet

    from fairstream.inference import decode_cuts

    loaded, cuts = golden
    good = next(iter(cuts))
    short = good.truncate(duration=0.01).with_id("short-cut")  # 160 samples < a 25 ms window
    both = CutSet.from_cuts([good, short])
    with pytest.raises(CorpusError, match="cut short-cut"):
        decode_cuts(loaded.model, loaded.tokenizer, loaded.cmvn, both, streaming=streaming,
                    progress=False)
    df = decode_cuts(loaded.model, loaded.tokenizer, loaded.cmvn, both, streaming=streaming,
                     on_error="skip", progress=False)
    assert list(df["utt_id"]) == [good.supervisions[0].id]
    assert [cid for cid, _ in df.attrs["skipped"]] == ["short-cut"]
    assert "cut short-cut" in df.attrs["skipped"][0][1]


def test_an_old_checkpoint_says_its_kind_and_search(golden):
    from fairstream.checkpoint import load_checkpoint
    from fairstream.inference import SearchConfig, recipe_search

    ck = load_checkpoint(GOLDEN / "tiny_transducer.pt")
    assert "kind" not in ck.extra and ck.extra.get("task") == "transducer"  # written by 0.1
    assert ck.kind == "transducer"
    search = recipe_search(ck.config, ck.path)
    assert isinstance(search, SearchConfig) and search.method in ("greedy", "beam")


def test_recipe_lm_is_found_beside_the_checkpoint_or_named(tmp_path):
    from fairstream.inference import SearchConfig, lm_beside, recipe_lm

    ckpt = tmp_path / "exp" / "averaged.pt"
    beam = SearchConfig(method="beam", lm_order=3)
    assert lm_beside(ckpt) == tmp_path / "exp" / "lm.json"
    assert recipe_lm(SearchConfig(method="beam"), ckpt) is None  # no LM asked for
    with pytest.raises(InputDataError, match="fairstream lm --checkpoint"):
        recipe_lm(beam, ckpt)
    with pytest.raises(InputDataError, match="beam search only"):
        recipe_lm(SearchConfig(), ckpt, GOLDEN / "lm.json")
    lm = recipe_lm(beam, ckpt, GOLDEN / "lm.json")
    assert lm is not None and lm.order == 3


def test_search_config_checks_its_settings():
    from fairstream.inference import SearchConfig

    with pytest.raises(InputDataError, match="decode.method must be one of greedy, beam"):
        SearchConfig(method="ctc")  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match="lm_weight must be >= 0"):
        SearchConfig(lm_weight=-1.0)
    assert "no LM" in SearchConfig(method="beam").describe()
