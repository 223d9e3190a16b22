"""`fairstream decode` / `fairstream transcribe` and the results table they write."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from _tiny_asr import tiny_trained_model
from click.testing import CliRunner

from fairstream.cli import main
from fairstream.errors import CheckpointError, InputDataError
from fairstream.inference import load_transducer, summarize_wer
from fairstream.metrics.wer import score_pairs
from fairstream.results import METADATA_COLUMNS, RESULT_COLUMNS, read_results


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    return tiny_corpus


@pytest.fixture(scope="module")
def exp(corpus, tmp_path_factory):
    return tiny_trained_model(corpus, tmp_path_factory)


@pytest.fixture(scope="module")
def few_cuts(corpus, tmp_path_factory):
    """Four test cuts (two speakers) as a cuts manifest: keeps the slower decoders quick."""
    from fairstream.data.corpus import load_corpus

    cuts = sorted(load_corpus(corpus).cuts("test"), key=lambda c: c.id)
    from lhotse import CutSet

    path = tmp_path_factory.mktemp("few") / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts[:2] + cuts[-2:]).to_file(path)
    return path


def _invoke(args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def offline(exp, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("decode")
    res = _invoke(["decode", "--checkpoint", exp / "averaged.pt", "--corpus", corpus,
                   "--out", out / "results.parquet", "--trn-dir", out / "trn", "--no-progress"])
    assert res.exit_code == 0, res.output
    return out, res.output


def _random_model_checkpoint(exp, path):
    """The experiment's checkpoint with freshly initialized weights: emits tokens everywhere."""
    import torch

    from fairstream.checkpoint import load_checkpoint, save_checkpoint
    from fairstream.models.factory import build_model, model_config_from_dict

    ck = load_checkpoint(exp / "final.pt")
    torch.manual_seed(1)
    model = build_model(model_config_from_dict(ck.config["model"]))
    return save_checkpoint(path, config=ck.config, model=model.state_dict(), extra=ck.extra,
                           kind=ck.kind)


def test_results_table_has_the_contract_columns_and_metadata(offline, corpus):
    out, text = offline
    df, meta = read_results(out / "results.parquet")
    assert list(df.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert set(METADATA_COLUMNS) <= set(df.columns)
    assert len(df) == 40 and df["utt_id"].is_unique
    speakers = pd.read_csv(corpus / "speakers.csv", dtype={"zip": str})
    merged = df.merge(speakers, on="speaker_id", suffixes=("", "_csv"))
    for col in ("accent", "gender", "age_band", "zip", "split", "lat"):
        assert (merged[col] == merged[f"{col}_csv"]).all(), col
    assert (df["split"] == "test").all()
    # counts are jiwer's on the normalized texts; n_ref_words = hits + sub + del
    again = score_pairs(df["ref"].tolist(), df["hyp"].tolist())
    assert df["sub"].tolist() == [c.substitutions for c in again]
    assert df["ins"].tolist() == [c.insertions for c in again]
    assert (df["n_ref_words"] == df["hits"] + df["sub"] + df["del"]).all()
    assert df["hyp"].str.len().sum() > 0  # a near-random model emits (wrong) tokens
    ts = df["timestamps"].iloc[int(df["hyp"].str.len().idxmax())]
    assert len(ts) > 0 and list(ts) == sorted(ts)
    # config: the training config and the decoding options travel with the table
    assert meta["train"]["model"]["vocab_size"] == 39  # the char tokenizer
    assert meta["decode"]["method"] == "greedy" and meta["decode"]["split"] == "test"
    raw = pq.read_schema(out / "results.parquet").metadata[b"fairstream"]
    assert json.loads(raw) == meta
    # printed summary: overall WER is Σerrors/Σwords
    errors = int((df["sub"] + df["del"] + df["ins"]).sum())
    assert f"WER {100 * errors / df['n_ref_words'].sum():.2f}%" in text
    for accent in df["accent"].unique():
        assert accent in text
    assert "overall" in text


def test_trn_files_for_sclite(offline):
    out, _ = offline
    ref = (out / "trn" / "ref.trn").read_text().splitlines()
    hyp = (out / "trn" / "hyp.trn").read_text().splitlines()
    df, _ = read_results(out / "results.parquet")
    assert len(ref) == len(hyp) == 40
    first = df.iloc[0]
    assert ref[0] == f"{first['ref']} ({first['speaker_id']}-{first['utt_id'].replace('-', '_')})"


def test_streaming_decode_matches_offline_greedy(exp, corpus, few_cuts, tmp_path):
    ckpt = _random_model_checkpoint(exp, tmp_path / "random.pt")
    common = ["decode", "--checkpoint", ckpt, "--cuts", few_cuts, "--speakers",
              corpus / "speakers.csv", "--no-progress"]
    res = _invoke([*common, "--out", tmp_path / "o.parquet"])
    assert res.exit_code == 0, res.output
    res = _invoke([*common, "--out", tmp_path / "s.parquet", "--streaming", "--chunk-ms", "160"])
    assert res.exit_code == 0, res.output
    a, _ = read_results(tmp_path / "o.parquet")
    b, meta = read_results(tmp_path / "s.parquet")
    assert meta["decode"]["streaming"] is True and len(b) == 4
    assert (a["hyp"].str.len() > 0).all()  # a random model emits plenty of tokens
    assert a["hyp"].tolist() == b["hyp"].tolist()
    for x, y in zip(a["timestamps"], b["timestamps"]):
        assert list(x) == pytest.approx(list(y))


def test_beam_search_and_cuts_manifest(exp, corpus, few_cuts, tmp_path):
    res = _invoke(["decode", "--checkpoint", exp / "averaged.pt", "--cuts", few_cuts,
                   "--speakers", corpus / "speakers.csv", "--method", "beam", "--beam", "2",
                   "--out", tmp_path / "b.parquet", "--no-progress", "--by", "gender"])
    assert res.exit_code == 0, res.output
    df, meta = read_results(tmp_path / "b.parquet")
    assert len(df) == 4 and (df["split"] == "test").all()  # split taken from speakers.csv
    assert meta["decode"]["method"] == "beam" and meta["decode"]["cuts"] == str(few_cuts)
    assert df["gender"].iloc[0] in res.output


def test_transcribe_offline_and_streaming_agree(exp, corpus, tmp_path):
    import numpy as np
    import soundfile as sf

    spk = min((corpus / "audio" / "test").iterdir())
    files = sorted(spk.glob("*.flac"))[:3]
    wav = tmp_path / "long.wav"  # three utterances of one speaker in a row
    sf.write(str(wav), np.concatenate([sf.read(str(f))[0] for f in files]), 16000)
    ckpt = _random_model_checkpoint(exp, tmp_path / "random.pt")
    offline = _invoke(["transcribe", wav, "--checkpoint", ckpt])
    streamed = _invoke(["transcribe", wav, "--checkpoint", ckpt, "--stream",
                        "--chunk-ms", "160", "--timestamps"])
    assert offline.exit_code == 0 and streamed.exit_code == 0, offline.output + streamed.output
    assert "search: greedy search, up to 3 tokens per frame" in offline.stderr
    lines = streamed.stdout.splitlines()
    final = [x for x in lines if "final:" in x]
    assert len(final) == 1
    final_text = final[0].split("final: ", 1)[1]
    assert final_text == offline.stdout.splitlines()[0]
    partials = [x.split("… ", 1)[1] for x in lines if "… " in x]
    assert len(partials) > 3  # printed as the audio comes in
    assert all(final_text.startswith(p) for p in partials)  # greedy never takes tokens back
    assert "@" in lines[-1]  # token@seconds
    # beam search with an LM: streaming and offline agree too
    lm = _invoke(["lm", "--checkpoint", ckpt, "--corpus", corpus, "--order", "3",
                  "--eval-split", "", "--out", tmp_path / "lm.json"])
    assert lm.exit_code == 0, lm.output
    fused = ["--beam", "3", "--lm", tmp_path / "lm.json", "--lm-weight", "0.3"]
    off_b = _invoke(["transcribe", wav, "--checkpoint", ckpt, *fused])
    on_b = _invoke(["transcribe", wav, "--checkpoint", ckpt, "--stream", *fused])
    assert off_b.exit_code == 0 and on_b.exit_code == 0, off_b.output + on_b.output
    on_final = next(x for x in on_b.output.splitlines() if "final:" in x).split("final: ", 1)[1]
    assert on_final == off_b.stdout.splitlines()[0]
    assert "search: beam search, beam 3" in off_b.stderr and "(weight 0.3)" in off_b.stderr
    no_beam = _invoke(["transcribe", wav, "--checkpoint", ckpt, "--lm", tmp_path / "lm.json"])
    assert no_beam.exit_code != 0 and "--lm needs --search beam" in no_beam.output


def test_bad_inputs_give_clear_errors(exp, corpus, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    res = _invoke(["decode", "--checkpoint", bad, "--corpus", corpus, "--out", tmp_path / "x"])
    assert res.exit_code != 0 and "bad.pt" in res.output and "corrupt" in res.output
    res = _invoke(["decode", "--checkpoint", exp / "final.pt", "--out", tmp_path / "x"])
    assert res.exit_code != 0 and "exactly one of --corpus or --cuts" in res.output
    silent = tmp_path / "short.wav"
    import numpy as np
    import soundfile as sf

    sf.write(str(silent), np.zeros(100, dtype=np.float32), 16000)
    res = _invoke(["transcribe", silent, "--checkpoint", exp / "final.pt"])
    assert res.exit_code != 0 and "short" in res.output.lower()
    # a checkpoint of something that is not a transducer
    from fairstream.checkpoint import save_checkpoint

    other = save_checkpoint(tmp_path / "other.pt", config={"model": {}}, model={})
    with pytest.raises(CheckpointError, match="not a transducer checkpoint"):
        load_transducer(other)


@pytest.mark.parametrize("streaming", [False, True])
def test_on_error_skip_reports_unusable_utterances(exp, few_cuts, tmp_path, streaming):
    from lhotse import CutSet

    cuts = [c.to_dict() for c in CutSet.from_file(few_cuts)][:3]
    (tmp_path / "garbage.flac").write_bytes(b"not audio")
    cuts[1]["recording"]["sources"][0]["source"] = str(tmp_path / "garbage.flac")
    cutset = CutSet.from_dicts(cuts)  # (consumes the dicts)
    broken = list(cutset)[1]
    path = tmp_path / "cuts.jsonl.gz"
    cutset.to_file(path)
    args = ["decode", "--checkpoint", exp / "final.pt", "--cuts", path, "--out",
            tmp_path / "r.parquet", "--no-progress"] + (["--streaming"] if streaming else [])
    res = _invoke(args)
    assert res.exit_code != 0 and broken.id in res.output
    res = _invoke([*args, "--on-error", "skip"])
    assert res.exit_code == 0, res.output
    assert "skipped 1 utterance(s)" in res.output and broken.id in res.output
    df, meta = read_results(tmp_path / "r.parquet")
    assert len(df) == 2 and broken.supervisions[0].id not in set(df["utt_id"])
    assert [s["cut_id"] for s in meta["decode"]["skipped"]] == [broken.id]


def test_tokenizer_model_vocab_mismatch_is_refused(exp, tmp_path):
    from fairstream.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(exp / "final.pt")
    config = json.loads(json.dumps(ck.config))
    config["model"]["vocab_size"] = 40
    save_checkpoint(tmp_path / "mismatch.pt", config=config, model=ck.model, extra=ck.extra,
                    kind=ck.kind)
    with pytest.raises(CheckpointError, match=r"tokenizer vocabulary \(39\).*vocab_size \(40\)"):
        load_transducer(tmp_path / "mismatch.pt")


def test_summarize_wer_is_sum_over_sum():
    df = pd.DataFrame({
        "speaker_id": ["a", "a", "b"], "accent": ["x", "x", "y"],
        "sub": [1, 0, 0], "del": [0, 0, 1], "ins": [0, 0, 1], "hits": [0, 10, 1],
    })
    s = summarize_wer(df, by=["accent"])
    assert s["accent"].tolist() == ["x", "y", "overall"]
    # group x: 1 error / 11 words (the mean of utterance WERs would be 0.5)
    assert s["wer"].tolist() == pytest.approx([1 / 11, 2 / 2, 3 / 13])
    assert s["speakers"].tolist() == [1, 1, 2]
    with pytest.raises(InputDataError, match="no column 'region'"):
        summarize_wer(df, by=["region"])


def test_ctc_head_decoding(exp, corpus, few_cuts, tmp_path):
    res = _invoke(["decode", "--checkpoint", exp / "averaged.pt", "--cuts", few_cuts,
                   "--speakers", corpus / "speakers.csv", "--method", "ctc",
                   "--out", tmp_path / "c.parquet", "--no-progress"])
    assert res.exit_code == 0, res.output
    df, meta = read_results(tmp_path / "c.parquet")
    assert len(df) == 4 and meta["decode"]["method"] == "ctc"
    for ts in df["timestamps"]:
        assert list(ts) == sorted(ts)
    bad = _invoke(["decode", "--checkpoint", exp / "averaged.pt", "--cuts", few_cuts,
                   "--method", "ctc", "--streaming", "--out", tmp_path / "s.parquet",
                   "--no-progress"])
    assert bad.exit_code != 0 and "decoded offline only" in bad.output
    assert not (tmp_path / "s.parquet").exists()


def test_lm_command_and_fused_streaming_beam_search(exp, corpus, few_cuts, tmp_path):
    res = _invoke(["lm", "--checkpoint", exp / "averaged.pt", "--corpus", corpus,
                   "--order", "4", "--out", tmp_path / "lm.json"])
    assert res.exit_code == 0, res.output
    assert "fitted NgramLM(order=4" in res.output and "dev perplexity per token" in res.output
    common = ["decode", "--checkpoint", exp / "averaged.pt", "--cuts", few_cuts, "--method",
              "beam", "--beam", "3", "--lm", tmp_path / "lm.json", "--lm-weight", "0.4",
              "--no-progress"]
    off = _invoke([*common, "--out", tmp_path / "off.parquet"])
    on = _invoke([*common, "--streaming", "--chunk-ms", "80", "--out", tmp_path / "on.parquet"])
    lm_path = str(tmp_path / "lm.json")
    assert "LM " + lm_path + " (4-gram) (weight 0.4), token bonus 1.5" in on.stderr
    assert off.exit_code == 0 and on.exit_code == 0, off.output + on.output
    a, meta = read_results(tmp_path / "off.parquet")
    b, _ = read_results(tmp_path / "on.parquet")
    assert list(a["hyp"]) == list(b["hyp"])  # streaming beam search == offline
    assert meta["decode"]["lm"] == str(tmp_path / "lm.json")
    assert meta["decode"]["lm_weight"] == 0.4 and meta["decode"]["token_bonus"] == 1.5
    bad = _invoke(["decode", "--checkpoint", exp / "averaged.pt", "--cuts", few_cuts,
                   "--lm", tmp_path / "lm.json", "--out", tmp_path / "g.parquet"])
    assert bad.exit_code != 0 and "--lm needs --search beam" in bad.output


def test_search_recipe_uses_the_checkpoint_search_and_the_lm_beside_it(exp, corpus, few_cuts,
                                                                       tmp_path):
    """`--search recipe` runs the checkpoint's `decode` section with the LM `fairstream lm`
    stored beside the checkpoint: the same hypotheses as the same search given as options."""
    from fairstream.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(exp / "averaged.pt")
    config = json.loads(json.dumps(ck.config))
    config["decode"] = {"method": "beam", "beam": 3, "max_symbols_per_frame": 2, "lm_order": 3,
                        "lm_weight": 0.3, "token_bonus": 0.5}
    ckpt = save_checkpoint(tmp_path / "exp" / "model.pt", config=config, model=ck.model,
                           extra=ck.extra, kind=ck.kind)
    common = ["decode", "--checkpoint", ckpt, "--cuts", few_cuts, "--no-progress"]
    missing = _invoke([*common, "--search", "recipe", "--out", tmp_path / "m.parquet"])
    assert missing.exit_code != 0 and "fairstream lm --checkpoint" in missing.output
    assert str(tmp_path / "exp" / "lm.json") in missing.output
    fit = _invoke(["lm", "--checkpoint", ckpt, "--corpus", corpus, "--eval-split", ""])
    assert fit.exit_code == 0, fit.output
    assert "fitted NgramLM(order=3" in fit.output  # the recipe's order, stored beside it
    assert (tmp_path / "exp" / "lm.json").is_file()
    recipe = _invoke([*common, "--search", "recipe", "--out", tmp_path / "r.parquet"])
    assert recipe.exit_code == 0, recipe.output
    assert "search: beam search, beam 3, up to 2 tokens per frame, LM " in recipe.stderr
    assert "(the checkpoint's recipe)" in recipe.stderr
    given = _invoke([*common, "--search", "beam", "--beam", "3", "--max-symbols", "2",
                     "--lm", tmp_path / "exp" / "lm.json", "--lm-weight", "0.3",
                     "--token-bonus", "0.5", "--out", tmp_path / "g.parquet"])
    assert given.exit_code == 0, given.output
    a, meta = read_results(tmp_path / "r.parquet")
    b, _ = read_results(tmp_path / "g.parquet")
    assert list(a["hyp"]) == list(b["hyp"])
    assert meta["decode"]["source"] == "recipe" and meta["decode"]["method"] == "beam"
    assert meta["decode"]["search"]["lm_order"] == 3
    greedy = _invoke([*common, "--out", tmp_path / "d.parquet"])  # the default stays greedy
    assert greedy.exit_code == 0 and "search: greedy search" in greedy.stderr


def _gated_transformer_checkpoint(exp, path):
    """The experiment's tokenizer and features with a random gated Transformer encoder whose
    arbitrators turn about half the sub-blocks off."""
    import torch

    from fairstream.checkpoint import load_checkpoint, save_checkpoint
    from fairstream.models.factory import build_model, model_config_from_dict

    ck = load_checkpoint(exp / "final.pt")
    config = json.loads(json.dumps(ck.config))
    config["model"]["encoder"] = {"name": "transformer", "kwargs": {
        "subsampling": 4, "conv_channels": 8, "d_model": 32, "num_heads": 2, "ffn_dim": 64,
        "num_layers": 2, "left_context": 4, "output_dim": 32, "gated": True}}
    torch.manual_seed(3)
    model = build_model(model_config_from_dict(config["model"]))
    with torch.no_grad():
        for block in model.encoder.blocks:
            block.arbitrator[2].weight.normal_(0.0, 2.0)
            block.arbitrator[2].bias.zero_()
    return save_checkpoint(path, config=config, model=model.state_dict(), extra=ck.extra,
                           kind=ck.kind)


def test_gated_transformer_streams_and_decode_prints_its_gate_share(exp, corpus, few_cuts,
                                                                    tmp_path):
    import re

    import numpy as np
    import soundfile as sf

    ckpt = _gated_transformer_checkpoint(exp, tmp_path / "gated.pt")
    spk = min((corpus / "audio" / "test").iterdir())
    wav = tmp_path / "u.wav"
    sf.write(str(wav), np.concatenate([sf.read(str(f))[0]
                                       for f in sorted(spk.glob("*.flac"))[:2]]), 16000)
    offline = _invoke(["transcribe", wav, "--checkpoint", ckpt])
    streamed = _invoke(["transcribe", wav, "--checkpoint", ckpt, "--stream", "--chunk-ms", "80"])
    assert offline.exit_code == 0 and streamed.exit_code == 0, offline.output + streamed.output
    final = [x for x in streamed.stdout.splitlines() if "final:" in x]
    assert final and final[0].split("final: ", 1)[1] == offline.stdout.splitlines()[0]

    res = _invoke(["decode", "--checkpoint", ckpt, "--cuts", few_cuts, "--out",
                   tmp_path / "g.parquet", "--no-progress"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("gates: "))
    share = float(re.match(r"gates: ([\d.]+) % of the encoder-block compute ran", line)[1])
    assert 10.0 < share < 95.0  # random arbitrators: some sub-blocks ran, some did not
    # the same share counted directly on the encoder, utterance by utterance (no padding)
    import torch
    from lhotse import CutSet

    from fairstream.inference import cut_fbank

    loaded = load_transducer(ckpt)
    tally = loaded.model.encoder.start_gate_tally()
    with torch.inference_mode():
        for cut in CutSet.from_file(few_cuts):
            feats = torch.from_numpy(loaded.cmvn.apply(cut_fbank(cut))).unsqueeze(0)
            loaded.model.encode(feats, torch.tensor([feats.shape[1]]))
    assert share == pytest.approx(100 * tally.compute_share(), abs=0.05)
