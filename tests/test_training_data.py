"""Training batches: shapes and padding, determinism, exact resume, sharding, cache, SpecAugment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from audio_factory import make_cuts

from fairstream.errors import CorpusError, InputDataError
from fairstream.features import compute_cmvn, compute_fbank
from fairstream.tokenizer import Tokenizer
from fairstream.training.data import (
    Batch,
    SpecAugmentConfig,
    load_cut_features,
    make_dataloader,
    per_rank_duration,
    precompute_features,
    spec_augment,
)
from fairstream.training.selection import SelectConfig, select_cuts, select_speakers


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    cuts = make_cuts(root / "audio", n=16)
    tok = Tokenizer.train([c.supervisions[0].text for c in cuts], root / "tok", model_type="char")
    cmvn = compute_cmvn(load_cut_features(c) for c in cuts)
    return root, cuts, tok, cmvn


def _loader(setup, **kw):
    _, cuts, tok, cmvn = setup
    args = {"tokenizer": tok, "cmvn": cmvn, "max_duration": 5.0, "shuffle": True,
                "spec_augment": SpecAugmentConfig(), "seed": 7}
    args.update(kw)
    return make_dataloader(kw.pop("cuts", cuts), **{k: v for k, v in args.items() if k != "cuts"})


def _same(a: list[Batch], b: list[Batch]) -> None:
    assert [x.cut_ids for x in a] == [y.cut_ids for y in b]
    for x, y in zip(a, b):
        assert torch.equal(x.features, y.features)
        assert torch.equal(x.tokens, y.tokens)
        assert torch.equal(x.feature_lens, y.feature_lens)


def test_batch_shapes_padding_and_content(setup) -> None:
    _, cuts, tok, cmvn = setup
    by_id = {c.id: c for c in cuts}
    batches = list(_loader(setup, spec_augment=None))
    assert sorted(i for b in batches for i in b.cut_ids) == sorted(by_id)  # every cut once
    for b in batches:
        n = b.size
        assert b.features.dtype == torch.float32
        assert b.features.shape[0] == n and b.features.shape[2] == 80
        assert b.feature_lens.dtype == torch.int64 and b.tokens.dtype == torch.int64
        assert b.features.shape[1] == int(b.feature_lens.max())
        assert b.tokens.shape == (n, int(b.token_lens.max()))
        assert b.feature_lens.tolist() == sorted(b.feature_lens.tolist(), reverse=True)
        assert sum(by_id[i].duration for i in b.cut_ids) <= 5.0 + 1e-6
        for k, cid in enumerate(b.cut_ids):
            cut = by_id[cid]
            t, u = int(b.feature_lens[k]), int(b.token_lens[k])
            expected = cmvn.apply(compute_fbank(cut.load_audio()[0]))
            np.testing.assert_allclose(b.features[k, :t].numpy(), expected, atol=1e-5)
            assert torch.all(b.features[k, t:] == 0)
            assert torch.all(b.tokens[k, u:] == 0) and torch.all(b.tokens[k, :u] > 0)
            assert tok.decode(b.tokens[k, :u].tolist()) == cut.supervisions[0].text == b.texts[k]
            assert b.speaker_ids[k] == cut.supervisions[0].speaker


def test_deterministic_given_seed_and_epoch(setup) -> None:
    a, b = _loader(setup), _loader(setup)
    _same(list(a), list(b))
    a.set_epoch(1)
    b.set_epoch(1)
    e1a, e1b = list(a), list(b)
    _same(e1a, e1b)
    e0 = list(_loader(setup))
    assert [x.cut_ids for x in e0] != [x.cut_ids for x in e1a]  # shuffling depends on the epoch


def test_workers_do_not_change_batches(setup) -> None:
    _same(list(_loader(setup)), list(_loader(setup, num_workers=2)))


def test_resume_from_state_dict_is_exact(setup) -> None:
    full = _loader(setup)
    full.set_epoch(2)
    reference = list(full)
    assert len(reference) >= 4

    first = _loader(setup)
    first.set_epoch(2)
    it = iter(first)
    seen = [next(it) for _ in range(3)]
    state = first.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == 3
    del it

    resumed = _loader(setup)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the training loop does this; it must keep the resume point
    rest = list(resumed)
    _same(seen + rest, reference)
    assert resumed.state_dict()["batches_done"] == len(reference)

    _same(list(_loader(setup).batches(2, skip=3)), reference[3:])

    wrong = _loader(setup, seed=8)
    with pytest.raises(InputDataError, match="seed"):
        wrong.load_state_dict(state)


def test_rank_sharding_splits_the_data(setup) -> None:
    _, cuts, _, _ = setup
    r0 = list(_loader(setup, rank=0, world_size=2, spec_augment=None))
    r1 = list(_loader(setup, rank=1, world_size=2, spec_augment=None))
    assert len(r0) == len(r1)  # equal step counts keep DDP ranks in lock step
    ids0 = {i for b in r0 for i in b.cut_ids}
    ids1 = {i for b in r1 for i in b.cut_ids}
    assert ids0 | ids1 == {c.id for c in cuts}
    assert len(ids0 & ids1) <= 2  # at most the padding lhotse adds to even out the last step
    with pytest.raises(InputDataError, match="rank 2"):
        _loader(setup, rank=2, world_size=2)


def test_max_duration_is_the_global_batch_split_over_the_ranks(setup) -> None:
    _, cuts, _, _ = setup
    seconds = {c.id: c.duration for c in cuts}
    total = 10.0  # data.max_duration: seconds of audio per optimizer step over all ranks
    assert per_rank_duration(total, 1) == total and per_rank_duration(total, 4) == 2.5
    shards = [list(_loader(setup, max_duration=per_rank_duration(total, 2), rank=rank,
                           world_size=2, spec_augment=None)) for rank in (0, 1)]
    for shard in shards:
        assert all(sum(seconds[i] for i in b.cut_ids) <= total / 2 for b in shard)
    for b0, b1 in zip(*shards):  # one optimizer step sees both ranks' batches
        assert sum(seconds[i] for i in (*b0.cut_ids, *b1.cut_ids)) <= total
    # the same global value on one process fills batches beyond one rank's share
    single = list(_loader(setup, max_duration=per_rank_duration(total, 1), spec_augment=None))
    assert max(sum(seconds[i] for i in b.cut_ids) for b in single) > total / 2
    with pytest.raises(InputDataError, match="world_size"):
        per_rank_duration(total, 0)


def test_transducer_batch_is_per_process_and_long_cuts_name_both_values(setup) -> None:
    from fairstream.training.config import load_config
    from fairstream.training.transducer import rank_batch_duration

    _, cuts, _, _ = setup
    longest = max(c.duration for c in cuts)
    config = load_config(None, [f"data.max_duration={1.5 * longest}"])
    assert rank_batch_duration(config, cuts, 1) == pytest.approx(1.5 * longest)
    assert rank_batch_duration(load_config(None, [f"data.max_duration={4 * longest}"]), cuts,
                               2) == pytest.approx(2 * longest)
    with pytest.raises(InputDataError, match=r"data.max_duration=.* over 2 process\(es\) "
                                             r"gives .* s per process.*longest training cut"):
        rank_batch_duration(config, cuts, 2)


def test_feature_cache_gives_identical_batches_and_is_reused(setup) -> None:
    root, cuts, _, _ = setup
    cache = root / "cache"
    plain = list(_loader(setup))
    cached = list(_loader(setup, feature_cache=cache))
    _same(plain, cached)
    npy = sorted(cache.rglob("*.npy"))
    assert len(npy) == len(cuts)
    mtimes = [p.stat().st_mtime_ns for p in npy]
    again = precompute_features(cuts, cache)
    assert [p.stat().st_mtime_ns for p in sorted(cache.rglob("*.npy"))] == mtimes  # reused
    subset = precompute_features(cuts.subset(first=5), cache)  # another list, same cuts
    assert len(subset) == 5
    assert [p.stat().st_mtime_ns for p in sorted(cache.rglob("*.npy"))] == mtimes
    assert all(c.has_features for c in again)
    c0 = next(iter(again))
    np.testing.assert_array_equal(load_cut_features(c0), compute_fbank(c0.load_audio()[0]))
    victim = Path(c0.features.storage_path) / c0.features.storage_key
    victim.write_bytes(b"not an array")
    with pytest.raises(CorpusError, match=f"cut {c0.id}: cached features cannot be read"):
        load_cut_features(c0)
    precompute_features(cuts.subset(first=len(cuts) - 1), cache)  # a new list rechecks its files
    np.testing.assert_array_equal(np.load(victim), compute_fbank(c0.load_audio()[0]))
    parallel = {c.id: c for c in precompute_features(cuts, root / "cache2", num_jobs=2)}
    for c in again:
        np.testing.assert_array_equal(load_cut_features(parallel[c.id]), load_cut_features(c))


def test_spec_augment_masks(setup) -> None:
    cfg = SpecAugmentConfig(num_freq_masks=2, freq_mask_width=15, time_masks_per_frame=0.02,
                            time_mask_ratio=0.05, time_mask_max_width=40)
    feats = torch.full((3, 400, 80), 5.0)
    lens = torch.tensor([400, 250, 60])
    feats[1, 250:] = -1.0
    feats[2, 60:] = -1.0
    gen = torch.Generator().manual_seed(0)
    out = spec_augment(feats, lens, cfg, gen)
    assert torch.equal(feats[0], torch.full((400, 80), 5.0))  # input untouched
    masked_any = False
    for b, t in enumerate(lens.tolist()):
        valid = out[b, :t]
        assert torch.all(out[b, t:] == -1.0)  # padding untouched
        zero = valid == 0
        freq_cols = zero.all(dim=0)
        time_rows = zero.all(dim=1)
        assert int(freq_cols.sum()) <= 2 * 15
        n_masks = min(cfg.max_time_masks, int(t * cfg.time_masks_per_frame))
        assert int(time_rows.sum()) <= n_masks * min(40, int(t * 0.05))
        # every zero is explained by a full frequency column or a full time row
        assert torch.equal(zero, freq_cols[None, :] | time_rows[:, None])
        masked_any |= bool(zero.any())
    assert masked_any
    again = spec_augment(feats, lens, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    other = spec_augment(feats, lens, cfg, torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)


def test_time_masks_grow_with_length() -> None:
    cfg = SpecAugmentConfig(num_freq_masks=0, time_masks_per_frame=0.05, time_mask_ratio=0.05,
                            time_mask_max_width=10, max_time_masks=100)
    gen = torch.Generator().manual_seed(0)
    short = spec_augment(torch.ones(200, 100, 80), torch.full((200,), 100), cfg, gen)
    long = spec_augment(torch.ones(200, 1000, 80), torch.full((200,), 1000), cfg, gen)
    frac_short = (short == 0).all(dim=2).float().mean()
    frac_long = (long == 0).all(dim=2).float().mean()
    assert 0 < frac_short and 0 < frac_long
    assert abs(float(frac_long) - float(frac_short)) < 0.15  # masked share roughly constant


def test_time_warp_keeps_shape_and_is_deterministic() -> None:
    cfg = SpecAugmentConfig(num_freq_masks=0, time_masks_per_frame=0.0, time_warp=10)
    x = torch.linspace(0, 1, 300)[None, :, None].repeat(2, 1, 80)
    lens = torch.tensor([300, 200])
    a = spec_augment(x, lens, cfg, torch.Generator().manual_seed(3))
    b = spec_augment(x, lens, cfg, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a[0], x[0])
    assert torch.all(a[0, 1:, 0] >= a[0, :-1, 0] - 1e-6)  # a warp keeps the time order
    assert torch.equal(a[1, 200:], x[1, 200:])


def test_bad_inputs_are_named(setup, tmp_path: Path) -> None:
    _, cuts, _tok, _cmvn = setup
    longest = max(cuts, key=lambda c: c.duration)
    with pytest.raises(InputDataError, match=f"cut {longest.id}"):
        _loader(setup, max_duration=longest.duration - 0.01)
    with pytest.raises(InputDataError, match="SpecAugmentConfig.freq_mask_width"):
        SpecAugmentConfig(freq_mask_width=-1)
    short = make_cuts(tmp_path, n=1).subset(first=1)
    tiny = next(iter(short)).truncate(duration=0.01)
    with pytest.raises(CorpusError, match=f"cut {tiny.id}.*shorter than one analysis window"):
        load_cut_features(tiny)


def test_pipeline_on_the_tiny_corpus(tiny_corpus: Path, tmp_path: Path) -> None:
    from fairstream.data.corpus import load_corpus
    from fairstream.features import Cmvn

    corpus = load_corpus(tiny_corpus)
    cuts = corpus.cuts("train").to_eager()
    texts = [c.supervisions[0].text for c in cuts]
    tok = Tokenizer.train(texts, tmp_path / "tok", vocab_size=60, model_type="bpe")
    mean, std = corpus.cmvn
    loader = make_dataloader(cuts, tokenizer=tok, cmvn=Cmvn(mean=mean, std=std), max_duration=30.0,
                             shuffle=True, spec_augment=SpecAugmentConfig(), seed=0)
    by_id = {c.id: c for c in cuts}
    seen = []
    frames = []
    for batch in loader:
        seen += batch.cut_ids
        for k, cid in enumerate(batch.cut_ids):
            u = int(batch.token_lens[k])
            assert tok.decode(batch.tokens[k, :u].tolist()) == by_id[cid].supervisions[0].text
            frames.append(batch.features[k, : int(batch.feature_lens[k])])
    assert sorted(seen) == sorted(by_id)
    allf = torch.cat(frames)
    # the corpus CMVN normalizes its own train features (masked cells are exactly 0)
    assert abs(float(allf.mean())) < 0.2 and 0.6 < float(allf.std()) < 1.2


def test_freq_warp_moves_spectral_peaks_by_the_factor() -> None:
    from fairstream.training.data import freq_warp

    x = torch.zeros(3, 5, 80)
    x[:, :, 40] = 1.0  # a spectral line at bin 40 in every frame
    out = freq_warp(x, torch.tensor([1.0, 1.1, 0.9]))
    assert torch.equal(out[0], x[0])  # factor 1: identity
    assert int(out[1, 0].argmax()) == 44 and int(out[2, 0].argmax()) == 36
    assert torch.allclose(out[:, 0], out[:, 4])  # the same warp for every frame
    ramp = torch.arange(80, dtype=torch.float32).expand(1, 2, 80)
    warped = freq_warp(ramp, torch.tensor([1.25]))
    assert torch.allclose(warped[0, 0], (torch.arange(80) / 1.25).clamp(max=79))


def test_spec_augment_freq_warp_is_seeded_and_bounded() -> None:
    cfg = SpecAugmentConfig(num_freq_masks=0, max_time_masks=0, freq_warp=0.1)
    feats = torch.randn(4, 50, 80)
    lens = torch.full((4,), 50)
    a = spec_augment(feats, lens, cfg, torch.Generator().manual_seed(0))
    b = spec_augment(feats, lens, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, feats)
    assert float(a.abs().max()) <= float(feats.abs().max()) + 1e-6  # interpolation only
    off = spec_augment(feats, lens, SpecAugmentConfig(num_freq_masks=0, max_time_masks=0),
                       torch.Generator().manual_seed(0))
    assert torch.equal(off, feats)
    with pytest.raises(InputDataError, match="freq_warp must be in"):
        SpecAugmentConfig(freq_warp=0.5)


# ----------------------------------------------------------------------- data.select

SPEAKERS = pd.DataFrame({
    "speaker_id": ["s0", "s1", "s2", "s3", "s9"],
    "split": ["train", "train", "train", "train", "test"],
    "accent": ["en-029", "en-us", "en-029", "en-gb", "en-029"],
    "gender": ["female", "female", "male", "female", "female"],
})


def _speakers_of(cuts) -> list[str]:
    return [c.supervisions[0].speaker for c in cuts]


def test_select_speakers_by_predicate_file_or_both(tmp_path: Path) -> None:
    where = "accent in ['en-029'] and gender == 'female'"
    assert select_speakers(SelectConfig(where=where), SPEAKERS) == {"s0", "s9"}
    ids = tmp_path / "cohort.txt"
    ids.write_text("# the cohort\ns0\n\n s1 \ns3\n")
    assert select_speakers(SelectConfig(speakers_file=str(ids)), SPEAKERS) == {"s0", "s1", "s3"}
    both = SelectConfig(speakers_file=str(ids), where="gender == 'female' and accent != 'en-gb'")
    assert select_speakers(both, SPEAKERS) == {"s0", "s1"}  # a speaker must satisfy both
    assert select_speakers(SelectConfig(), SPEAKERS) is None


def test_select_cuts_trains_on_the_selection_or_oversamples_it(setup) -> None:
    _, cuts, _, _ = setup
    only = select_cuts(cuts, SelectConfig(where="speaker_id == 's1'"), SPEAKERS)
    assert set(_speakers_of(only)) == {"s1"}
    assert len(only) == _speakers_of(cuts).count("s1")
    over = select_cuts(cuts, SelectConfig(where="speaker_id == 's1'", oversample=3), SPEAKERS)
    counts = {s: _speakers_of(over).count(s) for s in ("s0", "s1", "s2", "s3")}
    assert counts == {s: _speakers_of(cuts).count(s) * (3 if s == "s1" else 1) for s in counts}
    assert select_cuts(cuts, SelectConfig(), SPEAKERS) is cuts


def test_select_cuts_by_a_file_of_cut_ids_alone_with_speakers_and_oversampled(
        setup, tmp_path: Path) -> None:
    _, cuts, _, _ = setup
    of = {s: [c.id for c in cuts if c.supervisions[0].speaker == s] for s in ("s0", "s1")}
    listed = [of["s0"][0], of["s1"][0], of["s1"][1]]
    ids = tmp_path / "cuts.txt"
    ids.write_text("# chosen cuts\n" + "\n".join(f" {i} " for i in listed) + "\n\n")
    only = select_cuts(cuts, SelectConfig(cuts_file=str(ids)), SPEAKERS)
    assert sorted(c.id for c in only) == sorted(listed)
    both = select_cuts(cuts, SelectConfig(cuts_file=str(ids), where="speaker_id == 's1'"),
                       SPEAKERS)  # the intersection: listed cuts of selected speakers
    assert sorted(c.id for c in both) == sorted(of["s1"][:2])
    over = select_cuts(cuts, SelectConfig(cuts_file=str(ids),
                                          where="speaker_id == 's1'", oversample=3), SPEAKERS)
    counts = {c.id: 0 for c in cuts}
    for c in over:
        counts[c.id] += 1
    assert counts == {i: 3 if i in of["s1"][:2] else 1 for i in counts}


def test_oversampled_cuts_are_batched_that_often(setup) -> None:
    _, cuts, _, _ = setup
    over = select_cuts(cuts, SelectConfig(where="speaker_id == 's2'", oversample=2), SPEAKERS)
    ids = [i for b in _loader(setup, cuts=over, spec_augment=None) for i in b.cut_ids]
    s2 = {c.id for c in cuts if c.supervisions[0].speaker == "s2"}
    assert sorted(ids) == sorted([c.id for c in cuts] + sorted(s2))


@pytest.mark.parametrize(
    ("select", "match"),
    [
        ({"where": "accnt == 'x'"}, r"data\.select\.where: unknown column 'accnt'.*accent"),
        ({"where": "accent in ["}, r"data\.select\.where: cannot evaluate"),
        ({"where": "1"}, r"data\.select\.where: '1' is not a true/false test"),
        ({"where": "accent == 'xx-yy'"}, r"data\.select selects no speaker"),
        ({"speakers_file": "missing.txt"}, r"data\.select\.speakers_file: cannot read"),
        ({"speakers_file": "ids.txt"}, r"ids\.txt line 2: speaker id 'nobody' is not in"),
        ({"speakers_file": "empty.txt"}, r"empty\.txt lists no speaker ids"),
        ({"where": "speaker_id == 's9'"}, r"none of whom has a training cut"),
        ({"cuts_file": "missing.txt"}, r"data\.select\.cuts_file: cannot read"),
        ({"cuts_file": "cut_ids.txt"},
         r"cut_ids\.txt: 2 cut id\(s\) are not training cuts: 'no-such-cut' \(line 2\), "
         r"'dev-cut' \(line 3\)"),
        ({"cuts_file": "empty.txt"}, r"empty\.txt lists no cut ids"),
        ({"cuts_file": "first_cut.txt", "where": "speaker_id == 's3'"},
         r"none of the 1 cuts of data\.select\.cuts_file belongs to the selected speakers"),
    ],
)
def test_selection_errors_name_the_key(setup, tmp_path, monkeypatch, select, match) -> None:
    _, cuts, _, _ = setup
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.txt").write_text("s0\nnobody\n")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    first = next(c for c in cuts if c.supervisions[0].speaker == "s0").id
    (tmp_path / "cut_ids.txt").write_text(f"{first}\nno-such-cut\ndev-cut\n")
    (tmp_path / "first_cut.txt").write_text(f"{first}\n")
    with pytest.raises(InputDataError, match=match):
        select_cuts(cuts, SelectConfig(**select), SPEAKERS)


def test_select_config_keys_are_checked() -> None:
    from fairstream.training.config import config_from_dict

    cfg = config_from_dict({}, ["data.select.where=gender == 'female'", "data.select.oversample=2"])
    assert cfg.data.select == SelectConfig(where="gender == 'female'", oversample=2)
    with pytest.raises(InputDataError, match=r"data\.select\.wheer"):
        config_from_dict({}, ["data.select.wheer=x"])
    with pytest.raises(InputDataError, match=r"data\.select\.oversample must be >= 1"):
        config_from_dict({}, ["data.select.where=x", "data.select.oversample=0"])
    with pytest.raises(InputDataError, match=r"oversample needs data\.select\.speakers_file"):
        config_from_dict({}, ["data.select.oversample=2"])
    cfg = config_from_dict({}, ["data.select.cuts_file=cuts.txt", "data.select.oversample=2"])
    assert cfg.data.select == SelectConfig(cuts_file="cuts.txt", oversample=2)
