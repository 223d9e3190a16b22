"""Automatic cohorts from speaker embeddings (after Dheram et al., arXiv 2207.11345).

Per-speaker mean embeddings are clustered with k-means (k given, or chosen by the silhouette
score over a range on a subsample); clusters are ranked by WER and the bottom cohort is the
worst cluster, or the worst clusters while their speaker share stays within ``bottom_share``.

Embeddings may be per speaker or per utterance (then averaged per speaker). Until a trained
speaker-embedding model is available, :func:`fallback_embeddings` computes a **fallback
embedding from audio**: per-speaker mean and standard deviation of 80-dim log-mel fbank
frames (160 dims), z-scored per dimension across speakers. It captures voice and channel
(pitch, spectral tilt, noise), not speaker identity as a trained model would; cohorts found
with it say so in the report.

An embedding source ``"encoder:CKPT"`` (``--embeddings encoder:CKPT``) computes embeddings
from the recognizer itself (:mod:`fairstream.inference.embeddings`, needs the ``[asr]`` extra
and ``corpus_dir`` with the audio): per audited utterance the mean and standard deviation
over time of the transducer encoder's output frames, averaged over each speaker's utterances,
z-scored per dimension across speakers (:func:`encoder_cohorts`). Mean + std pooling was
chosen by measurement: on the demo's test speakers it carries more accent information
(cross-validated accent accuracy 0.41 against 0.34 for the mean alone; docs/audit.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from fairstream.audit.disaggregate import Partition, apply_min_size
from fairstream.audit.inputs import Exclusion, ResultsTable
from fairstream.audit.speaker_stats import SpeakerStats
from fairstream.data.layout import AUDIO_DIR
from fairstream.errors import InputDataError, MissingDependencyError, TooFewSpeakersError

__all__ = [
    "ENCODER_POOLING",
    "ENCODER_PREFIX",
    "EmbeddingCohorts",
    "EmbeddingConfig",
    "encoder_checkpoint",
    "encoder_cohorts",
    "fallback_embeddings",
    "find_embedding_cohorts",
    "speaker_mean_embeddings",
]

logger = logging.getLogger(__name__)

Normalization = Literal["l2", "zscore", "none"]

#: an embedding source ``ENCODER_PREFIX + checkpoint`` is computed from the recognizer's encoder.
ENCODER_PREFIX = "encoder:"
#: statistics of an utterance's encoder frames used by the ``encoder:`` source.
ENCODER_POOLING: Literal["mean", "mean+std"] = "mean+std"


@dataclass(frozen=True)
class EmbeddingConfig:
    """Settings of the automatic-cohort search.

    Attributes:
        k: number of clusters; None chooses it by silhouette over ``k_range``.
        k_range: inclusive range of k tried when ``k`` is None.
        bottom_share: if set, the bottom cohort is the worst clusters while their cumulative
            share of speakers (%) stays ≤ this (at least one cluster); None: the worst cluster.
        normalize: "l2" (cosine geometry, for speaker embeddings), "zscore" (per dimension,
            for the fbank fallback) or "none".
        silhouette_sample: speakers used to choose k, score silhouettes and find initial
            centres (a subsample keeps the O(n²) silhouette cheap).
        n_init: k-means++ restarts on the subsample.
        max_iter: Lloyd iterations of the final fit on all speakers.
        seed: random seed.
        min_speakers: clusters below this size are pooled (privacy).
    """

    k: int | None = None
    k_range: tuple[int, int] = (2, 10)
    bottom_share: float | None = None
    normalize: Normalization = "l2"
    silhouette_sample: int = 2000
    n_init: int = 3
    max_iter: int = 100
    seed: int = 0
    min_speakers: int = 10


@dataclass(frozen=True)
class EmbeddingCohorts:
    """Outcome of the clustering.

    Attributes:
        partition: speakers → clusters, labels ``"cluster 1"`` (worst WER) … (-1: no embedding).
        cluster_codes: (S,) raw k-means cluster of each speaker before pooling (-1: none), for
            agreement measures (adjusted Rand index).
        k: clusters used.
        silhouette: k → silhouette score (on the subsample) of every k tried.
        bottom_labels: labels of the clusters forming the bottom cohort.
        source: "given" or a description of the fallback.
        exclusions: speakers without an embedding.
        centroids: (k, D) k-means centres in the normalized space, one per raw cluster, for
            nearest-centroid assignment of other speakers (:mod:`fairstream.audit.cohorts`).
        centroid_labels: the cohort label of each centre (a pooled cluster: its pool's label).
        normalization: how raw embeddings map into that space: ``{"kind": "l2" | "zscore" |
            "none"}``, with ``mean`` and ``std`` lists for ``zscore``.
    """

    partition: Partition
    cluster_codes: np.ndarray
    k: int
    silhouette: dict[int, float]
    bottom_labels: tuple[str, ...]
    source: str
    exclusions: tuple[Exclusion, ...] = ()
    centroids: np.ndarray | None = None
    centroid_labels: tuple[str, ...] = ()
    normalization: dict[str, object] | None = None


def speaker_mean_embeddings(
    ids: np.ndarray,
    vectors: np.ndarray,
    stats: SpeakerStats,
    utt_to_speaker: pd.Series | None = None,
) -> tuple[np.ndarray, np.ndarray, list[Exclusion]]:
    """Align embeddings with the speakers of ``stats`` (mean over a speaker's vectors).

    Args:
        ids: (N,) speaker ids, or utterance ids when ``utt_to_speaker`` maps them.
        vectors: (N, D) embeddings.
        stats: the audited speakers (S).
        utt_to_speaker: utterance id → speaker id; used when ``ids`` are not speaker ids.

    Returns:
        (matrix (S, D) float32 with zero rows for speakers without embedding,
        mask (S,) bool of speakers with one, exclusions).
    """
    ids = np.asarray([str(i) for i in ids], dtype=object)
    spk_index = stats.table.index
    codes = spk_index.get_indexer(ids)
    direct = codes >= 0
    exclusions: list[Exclusion] = []
    if not direct.all() and utt_to_speaker is not None:
        mapped = pd.Series(ids).map(utt_to_speaker).to_numpy()
        use_utt = pd.notna(mapped)
        if use_utt.sum() > direct.sum():
            ids = np.where(use_utt, mapped, ids).astype(object)
            codes = spk_index.get_indexer(ids)
            direct = codes >= 0
    if (~direct).any():
        exclusions.append(Exclusion("embedding",
                                    "embedding id is not an audited speaker or utterance",
                                    int((~direct).sum()), "rows",
                                    tuple(str(i) for i in ids[~direct][:5])))
    codes = codes[direct]
    s, dim = len(spk_index), vectors.shape[1]
    sums = np.zeros((s, dim), dtype=np.float64)
    if len(codes):
        _add_rows(sums, codes, vectors[direct])
    counts = np.bincount(codes, minlength=s)
    has = counts > 0
    mean = np.zeros((s, dim), dtype=np.float32)
    mean[has] = (sums[has] / counts[has, None]).astype(np.float32)
    if (~has).any():
        exclusions.append(Exclusion("embedding", "speaker has no embedding", int((~has).sum()),
                                    "speakers"))
    return mean, has, exclusions


def _add_rows(out: np.ndarray, codes: np.ndarray, rows: np.ndarray) -> None:
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    starts = np.r_[0, np.nonzero(np.diff(sc))[0] + 1]
    out[sc[starts]] += np.add.reduceat(rows[order].astype(np.float64), starts, axis=0)


def _normalize(x: np.ndarray, how: Normalization) -> np.ndarray:
    if how == "l2":
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(n, 1e-12)
    if how == "zscore":
        sd = x.std(axis=0)
        return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return x


def find_embedding_cohorts(
    stats: SpeakerStats,
    embeddings: np.ndarray,
    has_embedding: np.ndarray,
    config: EmbeddingConfig | None = None,
    *,
    source: str = "given",
    exclusions: Sequence[Exclusion] = (),
) -> EmbeddingCohorts:
    """Cluster speakers by embedding and rank clusters by WER.

    Args:
        stats: the audited speakers (S).
        embeddings: (S, D) per-speaker embeddings aligned with ``stats``.
        has_embedding: (S,) bool, speakers with an embedding.
        config: settings.
        source: provenance of the embeddings for the report.
        exclusions: exclusions from aligning the embeddings.
    """
    cfg = config or EmbeddingConfig()
    idx = np.nonzero(has_embedding)[0]
    if len(idx) < 2 * max(cfg.min_speakers, 1):
        raise TooFewSpeakersError(
            f"only {len(idx)} speakers have an embedding; k-means needs at least "
            f"{2 * max(cfg.min_speakers, 1)}"
        )
    # float64: sklearn computes float32 distances through a slow chunked float64 upcast
    raw_x = np.asarray(embeddings, dtype=np.float64)[idx]
    x = _normalize(raw_x, cfg.normalize)
    normalization: dict[str, object] = {"kind": cfg.normalize}
    if cfg.normalize == "zscore":
        sd = raw_x.std(axis=0)
        normalization.update(mean=raw_x.mean(axis=0).tolist(),
                             std=np.where(sd > 0, sd, 1.0).tolist())
    rng = np.random.default_rng(cfg.seed)
    sub = np.sort(rng.choice(len(idx), size=min(cfg.silhouette_sample, len(idx)), replace=False))
    sil: dict[int, float] = {}
    fits: dict[int, KMeans] = {}
    # k and the initial centres are chosen on a subsample; the final fit refines them on all
    # speakers (one run from good centres instead of n_init runs of k-means++ on everything)
    with threadpool_limits(limits=1):  # small fits: avoid OpenMP start-up/oversubscription
        if cfg.k is None:
            lo, hi = cfg.k_range
            hi = min(hi, len(sub) - 1)
            if lo < 2 or hi < lo:
                raise InputDataError(
                    f"k_range {cfg.k_range} is not usable with {len(sub)} speakers")
            for k in range(lo, hi + 1):
                fits[k] = KMeans(n_clusters=k, n_init=cfg.n_init, random_state=cfg.seed).fit(x[sub])
                sil[k] = float(silhouette_score(x[sub], fits[k].labels_))
            k_best = max(sil, key=lambda kk: sil[kk])
        else:
            k_best = cfg.k
            if k_best < 2 or k_best > len(sub):
                raise InputDataError(f"k={k_best} clusters for {len(idx)} speakers is not possible")
            fits[k_best] = KMeans(n_clusters=k_best, n_init=cfg.n_init,
                                  random_state=cfg.seed).fit(x[sub])
            if k_best < len(sub):
                sil[k_best] = float(silhouette_score(x[sub], fits[k_best].labels_))
    if len(sub) == len(idx):
        km = fits[k_best]
    else:
        with threadpool_limits(limits=1 if len(idx) < 20_000 else None):
            km = KMeans(n_clusters=k_best, init=fits[k_best].cluster_centers_, n_init=1,
                        max_iter=cfg.max_iter, random_state=cfg.seed).fit(x)
    raw = np.full(len(has_embedding), -1, dtype=np.int64)
    raw[idx] = km.labels_
    e = stats.errors.astype(np.float64)[idx]
    w = stats.words.astype(np.float64)[idx]
    eg = np.bincount(km.labels_, weights=e, minlength=k_best)
    wg = np.bincount(km.labels_, weights=w, minlength=k_best)
    with np.errstate(all="ignore"):
        wer = np.where(wg > 0, eg / np.maximum(wg, 1), -np.inf)
    rank = np.argsort(-wer, kind="stable")  # worst first
    pos = np.empty(k_best, dtype=np.int64)
    pos[rank] = np.arange(k_best)
    codes = np.where(raw >= 0, pos[np.maximum(raw, 0)], -1)
    labels = tuple(f"cluster {i + 1}" for i in range(k_best))
    part = apply_min_size(Partition(name="embedding", codes=codes, labels=labels), cfg.min_speakers)
    n_spk = np.bincount(part.codes[part.codes >= 0], minlength=part.n_groups)
    ok = [i for i in range(part.n_groups) if part.status[i] == "ok"]
    ok_sorted = sorted(ok, key=lambda i: int(part.labels[i].split()[-1]))
    bottom: list[str] = []
    if ok_sorted:
        share = 0.0
        for i in ok_sorted:
            share_i = 100.0 * n_spk[i] / len(has_embedding)
            if bottom and (cfg.bottom_share is None or share + share_i > cfg.bottom_share):
                break
            bottom.append(part.labels[i])
            share += share_i
    logger.info("embedding cohorts: k=%d, bottom %s", k_best, bottom)
    centre_labels = []
    for r in range(k_best):
        members = np.nonzero((raw == r) & (part.codes >= 0))[0]
        centre_labels.append(part.labels[part.codes[members[0]]] if len(members) else "")
    return EmbeddingCohorts(
        partition=part, cluster_codes=raw, k=k_best, silhouette=sil,
        bottom_labels=tuple(bottom), source=source, exclusions=tuple(exclusions),
        centroids=np.asarray(km.cluster_centers_, dtype=np.float64),
        centroid_labels=tuple(centre_labels), normalization=normalization,
    )


def fallback_embeddings(
    corpus_dir: str | Path,
    speaker_ids: Sequence[str],
    *,
    max_utterances: int = 8,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[Exclusion]]:
    """Fallback speaker embeddings from audio: mean and std of log-mel fbank frames.

    Reads up to ``max_utterances`` files per speaker from
    ``corpus_dir/audio/<split>/<speaker_id>/*.flac`` (the corpus layout).

    Returns:
        (matrix (S, 160) float32, has (S,) bool, exclusions) aligned with ``speaker_ids``.

    Raises:
        MissingDependencyError: the ``[asr]`` extra (fbank features, audio reading) is not
            installed.
    """
    from tqdm.auto import tqdm

    try:
        import soundfile as sf

        from fairstream.features.fbank import compute_fbank
    except ImportError as exc:
        raise MissingDependencyError("the fallback fbank embedding (method embedding "
                                     "without --embeddings)", "asr",
                                     exc.name or "a dependency") from exc

    root = Path(corpus_dir) / AUDIO_DIR
    if not root.is_dir():
        raise InputDataError(f"no audio directory {root} for fallback embeddings")
    by_speaker: dict[str, list[Path]] = {}
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for spk_dir in split_dir.iterdir():
            if spk_dir.is_dir():
                by_speaker.setdefault(spk_dir.name, []).extend(sorted(spk_dir.glob("*.flac")))
    out = np.zeros((len(speaker_ids), 160), dtype=np.float32)
    has = np.zeros(len(speaker_ids), dtype=bool)
    unreadable = 0
    for i, spk in enumerate(tqdm(speaker_ids, desc="fallback embeddings", disable=not progress)):
        feats = []
        for path in by_speaker.get(str(spk), [])[:max_utterances]:
            try:
                audio, rate = sf.read(path, dtype="float32", always_2d=False)
                feats.append(compute_fbank(audio, rate, resample_input=True, name=str(path)))
            except (InputDataError, RuntimeError, OSError):
                unreadable += 1
        if feats:
            f = np.concatenate(feats, axis=0)
            out[i] = np.concatenate([f.mean(0), f.std(0)])
            has[i] = True
    ex = []
    if unreadable:
        ex.append(Exclusion("embedding", "audio file unreadable or too short", unreadable, "rows"))
    if (~has).any():
        ex.append(Exclusion("embedding", "speaker has no audio for the fallback embedding",
                            int((~has).sum()), "speakers"))
    return out, has, ex


def encoder_checkpoint(source: object) -> Path | None:
    """The checkpoint of an ``"encoder:CKPT"`` embedding source; None for any other source.

    Raises:
        InputDataError: the checkpoint file does not exist (named).
    """
    if not (isinstance(source, str) and source.startswith(ENCODER_PREFIX)):
        return None
    path = Path(source[len(ENCODER_PREFIX):])
    if not path.is_file():
        raise InputDataError(f"encoder checkpoint {path} not found (embeddings {source!r})")
    return path


def encoder_cohorts(
    checkpoint: Path,
    corpus_dir: Path | None,
    stats: SpeakerStats,
    table: ResultsTable,
    config: EmbeddingConfig,
    provenance: dict[str, object],
    *,
    progress: bool = False,
) -> EmbeddingCohorts:
    """k-means cohorts of per-speaker means of the recognizer's encoder states.

    Embeds every audited utterance of ``table`` found in the corpus (matched on the
    utterance id), averages per speaker, z-scores per dimension and clusters.
    ``provenance["embeddings"]`` records the checkpoint, corpus and cache file.

    Raises:
        InputDataError: no corpus directory, or no audited utterance is in it.
        MissingDependencyError: the ``[asr]`` extra (torch, lhotse) is not installed.
    """
    if corpus_dir is None:
        raise InputDataError(f"embeddings {ENCODER_PREFIX}{checkpoint} need the corpus "
                             "directory with the audio of the audited utterances (--corpus-dir)")
    try:
        from fairstream.inference.embeddings import utterance_encoder_stats
    except ImportError as exc:
        raise MissingDependencyError(f"the encoder embedding ({ENCODER_PREFIX}{checkpoint})",
                                     "asr", exc.name or "a dependency") from exc
    utt = table.utterances
    enc = utterance_encoder_stats(checkpoint, corpus_dir, _audited_splits(corpus_dir, utt),
                                  utterances=utt["utt_id"].astype(str).tolist(),
                                  progress=progress)
    ex: list[Exclusion] = []
    missing = len(utt) - len(enc.utt_ids) - len(enc.skipped)
    if missing:
        ex.append(Exclusion("embedding", "utterance not in the corpus (no audio to embed)",
                            missing, "utterances"))
    if enc.skipped:
        ex.append(Exclusion("embedding", "audio unreadable or too short, or no speaker",
                            len(enc.skipped), "utterances",
                            tuple(u for u, _ in enc.skipped[:5])))
    utt_map = pd.Series(utt["speaker_id"].to_numpy(), index=utt["utt_id"].astype(str).to_numpy())
    mat, has, ex_align = speaker_mean_embeddings(enc.utt_ids, enc.vectors(ENCODER_POOLING),
                                                 stats, utt_map)
    text = (f"recognizer encoder {checkpoint.name}: per-speaker mean over utterances of the "
            f"{ENCODER_POOLING} over time of the encoder output frames ({mat.shape[1]} dims), "
            "z-scored")
    provenance["embeddings"] = {
        "source": text, "checkpoint": str(checkpoint), "corpus_dir": str(corpus_dir),
        "pooling": ENCODER_POOLING, "utterances": int(len(enc.utt_ids)),
        "from_cache": enc.from_cache,
        "cache_file": None if enc.cache_file is None else str(enc.cache_file),
    }
    return find_embedding_cohorts(stats, mat, has, replace(config, normalize="zscore"),
                                  source=text, exclusions=[*ex, *ex_align])


def _audited_splits(corpus_dir: Path, utterances: pd.DataFrame) -> list[str] | None:
    """The corpus splits named by the results' ``split`` column (None: search every split)."""
    from fairstream.data.layout import corpus_splits, read_corpus_json

    if "split" not in utterances.columns or utterances["split"].isna().any():
        return None
    wanted = sorted({str(v) for v in utterances["split"]})
    present = corpus_splits(read_corpus_json(corpus_dir))
    return wanted if all(w in present for w in wanted) else None
