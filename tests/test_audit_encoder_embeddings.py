"""Speaker embeddings from the recognizer's encoder (``--embeddings encoder:CKPT``).

The model is the golden tiny transducer (trained on the ``tiny`` preset, seed 0), the corpus
the session's ``tiny_corpus`` (the same preset and seed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from test_audit_without_torch import _cli

from fairstream.cli import main

CKPT = Path(__file__).parent / "data" / "golden" / "tiny_transducer.pt"


def _manual_speaker_stats(corpus: Path, split: str, speaker: str) -> tuple[np.ndarray, ...]:
    """Mean over the speaker's utterances of each utterance's frame mean and std, one
    utterance at a time (no batching, no padding)."""
    import torch

    from fairstream.data.corpus import load_corpus
    from fairstream.inference import cut_fbank, load_transducer

    loaded = load_transducer(CKPT)
    means, stds = [], []
    for cut in load_corpus(corpus).cuts(split):
        if cut.supervisions[0].speaker != speaker:
            continue
        feats = torch.from_numpy(loaded.cmvn.apply(cut_fbank(cut)))[None]
        with torch.no_grad():
            enc, lens = loaded.model.encode(feats, torch.tensor([feats.shape[1]]))
        frames = enc[0, : int(lens[0])].double().numpy()
        means.append(frames.mean(0))
        stds.append(frames.std(0))
    assert means, f"no utterance of {speaker}"
    return np.mean(means, axis=0), np.mean(stds, axis=0)


def test_one_row_per_speaker_equal_to_a_manual_computation(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    from fairstream.data.corpus import load_corpus
    from fairstream.inference.embeddings import encoder_embeddings, utterance_encoder_stats

    stats = utterance_encoder_stats(CKPT, tiny_corpus, "test", cache_dir=tmp_path)
    cuts = list(load_corpus(tiny_corpus).cuts("test"))
    speakers = sorted({str(c.supervisions[0].speaker) for c in cuts})
    assert len(stats.utt_ids) == len(cuts) and stats.skipped == ()
    assert list(stats.utt_ids) == sorted(c.supervisions[0].id for c in cuts)
    dim = stats.mean.shape[1]
    assert dim > 0 and stats.std.shape == stats.mean.shape and (stats.frames > 0).all()

    ids, mat = encoder_embeddings(CKPT, tiny_corpus, "test", cache_dir=tmp_path)
    assert list(ids) == speakers and mat.shape == (len(speakers), dim)
    ids2, mat2 = encoder_embeddings(CKPT, tiny_corpus, "test", pooling="mean+std",
                                    cache_dir=tmp_path)
    assert list(ids2) == speakers and mat2.shape == (len(speakers), 2 * dim)
    np.testing.assert_array_equal(mat2[:, :dim], mat)

    spk = speakers[1]
    mean, std = _manual_speaker_stats(tiny_corpus, "test", spk)
    np.testing.assert_allclose(mat[1], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mat2[1, dim:], std, rtol=1e-4, atol=1e-5)
    assert not np.allclose(mat[0], mat[1])  # speakers differ


def test_cache_hit_is_identical_and_does_not_load_the_model(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fairstream.inference.embeddings as emb

    first = emb.utterance_encoder_stats(CKPT, tiny_corpus, "dev", cache_dir=tmp_path)
    assert first.from_cache == 0 and first.cache_file is not None
    assert first.cache_file.is_file() and first.cache_file.parent.parent == tmp_path
    assert not list(first.cache_file.parent.glob("*.tmp"))  # written atomically

    def no_model(path: object) -> None:
        raise AssertionError(f"the model was loaded again ({path})")

    monkeypatch.setattr(emb, "load_transducer", no_model)
    again = emb.utterance_encoder_stats(CKPT, tiny_corpus, "dev", cache_dir=tmp_path)
    assert again.from_cache == len(first.utt_ids)
    for name in ("utt_ids", "speaker_ids", "mean", "std", "frames"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    subset = list(first.utt_ids[:3])
    part = emb.utterance_encoder_stats(CKPT, tiny_corpus, utterances=subset, cache_dir=tmp_path)
    assert list(part.utt_ids) == subset
    np.testing.assert_array_equal(part.mean, first.mean[:3])
    with pytest.raises(AssertionError, match="loaded again"):  # another layer: another key
        emb.utterance_encoder_stats(CKPT, tiny_corpus, "dev", layer="norms.0", cache_dir=tmp_path)


def test_a_layer_by_name_and_an_unknown_layer(tiny_corpus: Path, tmp_path: Path) -> None:
    from fairstream.errors import InputDataError
    from fairstream.inference.embeddings import utterance_encoder_stats

    out = utterance_encoder_stats(CKPT, tiny_corpus, "dev", cache=False)
    inner = utterance_encoder_stats(CKPT, tiny_corpus, "dev", layer="norms.0", cache=False)
    assert inner.cache_file is None and list(inner.utt_ids) == list(out.utt_ids)
    assert not np.allclose(inner.mean[:, :4], out.mean[:, :4])
    with pytest.raises(InputDataError, match="no layer 'nope'"):
        utterance_encoder_stats(CKPT, tiny_corpus, "dev", layer="nope", cache=False)
    with pytest.raises(InputDataError, match="missing.pt"):
        utterance_encoder_stats(tmp_path / "missing.pt", tiny_corpus, "dev")


def _results(corpus: Path) -> pd.DataFrame:
    """Results of every utterance of the corpus: the reference, one word dropped for the
    speakers of two accents, and one utterance that is not in the corpus."""
    from fairstream.data.corpus import load_corpus

    c = load_corpus(corpus)
    accent = c.speakers.set_index("speaker_id")["accent"]
    worse = set(sorted(accent.unique())[:2])
    rows = []
    for split in c.splits:
        for cut in c.cuts(split):
            sup = cut.supervisions[0]
            words = str(sup.text).split()
            hyp = words[1:] if accent[sup.speaker] in worse and len(words) > 1 else words
            rows.append({"utt_id": sup.id, "speaker_id": sup.speaker, "split": split,
                         "ref": " ".join(words), "hyp": " ".join(hyp)})
    rows.append({"utt_id": "not-in-corpus", "speaker_id": rows[0]["speaker_id"],
                 "split": rows[0]["split"], "ref": "a b", "hyp": "a b"})
    return pd.DataFrame(rows)


def test_audit_end_to_end_with_encoder_embeddings(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fairstream.audit import AuditConfig, run_audit
    from fairstream.audit.privacy import PrivacyConfig

    monkeypatch.setenv("FAIRSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    results = _results(tiny_corpus)
    results.to_csv(tmp_path / "results.csv", index=False)
    out = tmp_path / "audit"
    r = CliRunner().invoke(main, [
        "audit", "--results", str(tmp_path / "results.csv"), "--corpus-dir", str(tiny_corpus),
        "--methods", "embedding", "--embeddings", f"encoder:{CKPT}", "--min-cohort", "4",
        "--n-boot", "50", "--no-progress", "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    emb = report["provenance"]["embeddings"]
    assert emb["source"].startswith("recognizer encoder tiny_transducer.pt")
    assert emb["utterances"] == len(results) - 1 and emb["from_cache"] == 0
    assert Path(emb["cache_file"]).parent.parent == tmp_path / "cache"
    reasons = {x["reason"]: x["count"] for x in report["exclusions"]}
    assert reasons["utterance not in the corpus (no audio to embed)"] == 1
    methods = pd.read_csv(out / "methods.csv")
    assert list(methods["method"]) == ["embedding"]
    assert np.isfinite(methods["ari_accent"].iloc[0])

    # the Python API, from the cache this time
    cfg = AuditConfig(n_boot=50, privacy=PrivacyConfig(min_cohort_speakers=4))
    res = run_audit(results, corpus_dir=tiny_corpus, methods="embedding",
                    embeddings=f"encoder:{CKPT}", config=cfg)
    assert res.provenance["embeddings"]["from_cache"] == len(results) - 1  # type: ignore[index]
    assert res.methods["bottom_cohort"].iloc[0] == methods["bottom_cohort"].iloc[0]


def test_cli_names_a_missing_encoder_checkpoint(tmp_path: Path) -> None:
    pd.DataFrame({"utt_id": ["u1"], "speaker_id": ["s1"], "ref": ["a"], "hyp": ["a"]}).to_csv(
        tmp_path / "r.csv", index=False)
    r = CliRunner().invoke(main, ["audit", "--results", str(tmp_path / "r.csv"), "--embeddings",
                                  "encoder:missing.pt", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "encoder checkpoint 'missing.pt' does not exist" in r.output
    assert "--embeddings" in r.output


def test_encoder_embeddings_without_torch_name_the_extra(tmp_path: Path) -> None:
    from _audit_fixture import write_fixed_input

    root = write_fixed_input(tmp_path / "in")
    r = _cli("audit", "--results", str(root / "results.csv"), "--corpus-dir", str(root),
             "--methods", "embedding", "--embeddings", f"encoder:{CKPT}", "--n-boot", "0",
             "--no-progress", "--out", str(tmp_path / "o"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"the encoder embedding (encoder:{CKPT})" in r.stderr
    assert "pip install 'fairstream[asr]'" in r.stderr
