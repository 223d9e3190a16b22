"""Fbank (offline == online for any chunking), sample-rate handling, edge cases and CMVN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from audio_factory import tone

from fairstream.errors import InputDataError
from fairstream.features import (
    Cmvn,
    FbankConfig,
    OnlineFbankExtractor,
    compute_cmvn,
    compute_fbank,
    num_frames,
)

AUDIO = tone(1.337, seed=3)


def _online(x: np.ndarray, sizes: list[int]) -> np.ndarray:
    ext = OnlineFbankExtractor()
    out, pos, i = [], 0, 0
    while pos < x.size:
        n = sizes[i % len(sizes)]
        out.append(ext.accept(x[pos:pos + n]))
        pos += n
        i += 1
    out.append(ext.finish())
    return np.concatenate(out)


def test_offline_shape_dtype_and_frame_count() -> None:
    feats = compute_fbank(AUDIO)
    assert feats.dtype == np.float32
    assert feats.shape == (num_frames(AUDIO.size), 80)
    assert feats.shape[0] == 1 + (AUDIO.size - 400) // 160
    assert np.all(np.isfinite(feats))


@pytest.mark.parametrize("chunk", [1, 7, 160, 399, 400, 1000, 16000])
def test_online_equals_offline_for_fixed_chunks(chunk: int) -> None:
    x = AUDIO if chunk != 1 else AUDIO[:4000]  # per-sample feeding is slow; keep it short
    np.testing.assert_array_equal(_online(x, [chunk]), compute_fbank(x))


def test_online_equals_offline_for_random_chunks() -> None:
    rng = np.random.default_rng(0)
    for trial in range(5):
        sizes = [int(s) for s in rng.integers(0, 2500, size=50)]
        np.testing.assert_array_equal(_online(AUDIO, sizes), compute_fbank(AUDIO),
                                      err_msg=str(trial))


def test_online_emits_frames_as_soon_as_their_window_is_complete() -> None:
    ext = OnlineFbankExtractor()
    assert ext.accept(AUDIO[:399]).shape == (0, 80)
    assert ext.accept(AUDIO[399:400]).shape == (1, 80)
    assert ext.accept(AUDIO[400:559]).shape == (0, 80)
    assert ext.accept(AUDIO[559:560]).shape == (1, 80)
    assert ext.finish().shape == (0, 80)
    assert ext.num_frames_emitted == 2


def test_online_short_stream_gives_zero_frames_and_offline_raises() -> None:
    ext = OnlineFbankExtractor()
    assert ext.accept(AUDIO[:300]).shape == (0, 80)
    assert ext.finish().shape == (0, 80)
    with pytest.raises(InputDataError, match="shorter than one analysis window"):
        compute_fbank(AUDIO[:300])
    with pytest.raises(InputDataError, match="empty audio"):
        compute_fbank(np.zeros(0, dtype=np.float32))


def test_online_reset_and_accept_after_finish() -> None:
    ext = OnlineFbankExtractor()
    a = np.concatenate([ext.accept(AUDIO), ext.finish()])
    with pytest.raises(InputDataError, match="after finish"):
        ext.accept(AUDIO[:10])
    ext.reset()
    b = np.concatenate([ext.accept(AUDIO), ext.finish()])
    np.testing.assert_array_equal(a, b)


def test_wrong_sample_rate_is_an_error_unless_resampling_is_asked_for() -> None:
    x8 = tone(1.0, sample_rate=8000, seed=1)
    with pytest.raises(InputDataError, match="8000 Hz"):
        compute_fbank(x8, sample_rate=8000)
    feats = compute_fbank(x8, sample_rate=8000, resample_input=True)
    assert feats.shape == (num_frames(16000), 80)
    with pytest.raises(InputDataError, match="8000 Hz"):
        OnlineFbankExtractor().accept(x8, sample_rate=8000)


def test_bad_samples_are_named() -> None:
    bad = AUDIO.copy()
    bad[10] = np.nan
    with pytest.raises(InputDataError, match="utt-7: audio contains NaN"):
        compute_fbank(bad, name="utt-7")
    with pytest.raises(InputDataError, match="mono"):
        compute_fbank(np.stack([AUDIO, AUDIO]))


def test_int16_input_is_scaled_to_float() -> None:
    pcm = np.round(AUDIO * 32767).astype(np.int16)
    np.testing.assert_allclose(compute_fbank(pcm), compute_fbank(pcm.astype(np.float32) / 32768),
                               rtol=0, atol=0)


def test_deterministic_and_config_changes_dim() -> None:
    np.testing.assert_array_equal(compute_fbank(AUDIO), compute_fbank(AUDIO))
    assert compute_fbank(AUDIO, config=FbankConfig(num_mel_bins=40)).shape[1] == 40


def test_cmvn_statistics_match_numpy_and_normalize() -> None:
    feats = [compute_fbank(tone(d, seed=s)) for s, d in enumerate([0.5, 0.9, 1.3])]
    cmvn = compute_cmvn(feats)
    allf = np.concatenate(feats).astype(np.float64)
    assert cmvn.frames == allf.shape[0]
    np.testing.assert_allclose(cmvn.mean, allf.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cmvn.std, allf.std(0), rtol=1e-4, atol=1e-5)
    normed = np.concatenate([cmvn.apply(f) for f in feats])
    np.testing.assert_allclose(normed.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normed.std(0), 1.0, atol=1e-3)
    t = cmvn.apply(torch.from_numpy(feats[0]))
    np.testing.assert_allclose(t.numpy(), cmvn.apply(feats[0]), atol=1e-6)


def test_cmvn_save_load_round_trip(tmp_path) -> None:
    cmvn = compute_cmvn([compute_fbank(AUDIO)])
    cmvn.save(tmp_path / "cmvn.json")
    data = json.loads((tmp_path / "cmvn.json").read_text())
    assert set(data) == {"mean", "std", "frames"} and len(data["mean"]) == 80
    back = Cmvn.load(tmp_path / "cmvn.json")
    np.testing.assert_array_equal(back.mean, cmvn.mean)
    np.testing.assert_array_equal(back.std, cmvn.std)
    assert back.frames == cmvn.frames
    assert not list(tmp_path.glob("*.tmp"))


def test_cmvn_bad_inputs(tmp_path) -> None:
    with pytest.raises(InputDataError, match="no frames"):
        compute_cmvn([])
    with pytest.raises(InputDataError, match="item 1"):
        compute_cmvn([np.zeros((3, 80)), np.zeros((3, 40))])
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(InputDataError, match="c.json"):
        Cmvn.load(tmp_path / "c.json")
    with pytest.raises(InputDataError, match="std > 0"):
        Cmvn(mean=np.zeros(80), std=np.zeros(80))
    with pytest.raises(InputDataError, match="do not end in dim 80"):
        Cmvn(mean=np.zeros(80), std=np.ones(80)).apply(np.zeros((2, 40), dtype=np.float32))
