"""Decode cuts with a trained transducer into the results table, and summarize its WER.

The table has one row per utterance (see :mod:`fairstream.results` for the columns): texts
are normalized, error counts come from :func:`fairstream.metrics.wer.score_pairs`, speaker
metadata are joined from ``speakers.csv``. Corpus and group WER are Σerrors / Σwords.

Errors: a cut whose audio or transcript is unusable is a :class:`~fairstream.errors.CorpusError`
naming it (or, with ``on_error="skip"``, is left out and listed); an exception raised by the
model or the search is not about the data and propagates unchanged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import torch
from lhotse.cut import Cut
from tqdm.auto import tqdm

from fairstream.data.text import normalize
from fairstream.decoding.search import SearchConfig
from fairstream.errors import CorpusError, InputDataError
from fairstream.features.fbank import Cmvn
from fairstream.inference.audio import cut_audio, cut_fbank
from fairstream.inference.search import beam_search_for
from fairstream.lm.ngram import NgramLM
from fairstream.metrics.wer import ErrorCounts, score_pairs, write_trn
from fairstream.models.transducer import Transducer
from fairstream.results import order_columns
from fairstream.tokenizer import Tokenizer

if TYPE_CHECKING:
    from fairstream.decoding.streaming import PartialResult, StreamingRecognizer

__all__ = ["decode_cuts", "summarize_wer", "write_trn_pair"]

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]


def _metadata(cut: Cut, speakers: pd.DataFrame | None) -> dict[str, Any]:  # Any: values of any type
    sup = cut.supervisions[0]
    meta: dict[str, Any] = {}  # Any: speakers.csv and supervision values of any type
    if speakers is not None and sup.speaker is not None and str(sup.speaker) in speakers.index:
        row = speakers.loc[str(sup.speaker)]
        meta.update({k: (None if pd.isna(v) else v) for k, v in row.items()})
    for k, v in (sup.custom or {}).items():
        if not isinstance(v, (dict, list)):
            meta[k] = v
    return meta


def _skip_or_raise(exc: CorpusError, cut_id: str, on_error: OnError,
                   skipped: list[tuple[str, str]]) -> None:
    if on_error != "skip":
        raise exc
    skipped.append((cut_id, str(exc)))
    logger.warning("skipping %s", exc)


def _batches(cuts: list[Cut], cmvn: Cmvn, max_duration: float, on_error: OnError,
             skipped: list[tuple[str, str]]) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                                list[str]]]:
    """Offline batches ``(features, lengths, cut ids)`` of at most ``max_duration`` seconds,
    similar durations together, longest first within a batch."""
    ordered = sorted(cuts, key=lambda c: (c.duration, c.id))
    groups: list[list[Cut]] = [[]]
    total = 0.0
    for cut in ordered:
        if groups[-1] and total + cut.duration > max_duration:
            groups.append([])
            total = 0.0
        groups[-1].append(cut)
        total += cut.duration
    for group in groups:
        items = []
        for cut in group:
            try:
                items.append((cmvn.apply(cut_fbank(cut)), cut.id))
            except CorpusError as exc:
                _skip_or_raise(exc, cut.id, on_error, skipped)
        if not items:
            continue
        items.sort(key=lambda it: (-it[0].shape[0], it[1]))
        features = torch.zeros(len(items), *items[0][0].shape, dtype=torch.float32)
        for i, (f, _) in enumerate(items):
            features[i, : f.shape[0]] = torch.from_numpy(f)
        lens = torch.tensor([f.shape[0] for f, _ in items], dtype=torch.int64)
        yield features, lens, [cid for _, cid in items]


def _stream_cut(rec: StreamingRecognizer, cut: Cut, rate: int, step: int) -> PartialResult:
    """The final result of one cut fed to ``rec`` in chunks of ``step`` samples.

    Raises:
        CorpusError: naming the cut when its audio cannot be read or the recognizer rejects it
            as data (bad samples, too short for one feature frame). Errors of the model or
            the search propagate unchanged.
    """
    audio = cut_audio(cut, rate)
    rec.reset()
    try:
        for start in range(0, len(audio), step):
            rec.accept(audio[start:start + step])
        return rec.finish()
    except InputDataError as exc:  # the recognizer's verdict on the audio it was given
        raise CorpusError(f"cut {cut.id}: {exc}") from exc


@torch.no_grad()
def decode_cuts(
    model: Transducer,
    tokenizer: Tokenizer,
    cmvn: Cmvn,
    cuts: Any,  # Any: a lhotse CutSet or any iterable of cuts
    *,
    search: SearchConfig | None = None,
    lm: NgramLM | None = None,
    ctc: bool = False,
    streaming: bool = False,
    chunk_ms: int = 160,
    max_duration: float = 120.0,
    speakers: pd.DataFrame | None = None,
    split: str | None = None,
    on_error: OnError = "raise",
    progress: bool = True,
) -> pd.DataFrame:
    """Decode every cut and score it against its transcript.

    Args:
        model: a transducer in eval mode.
        tokenizer: its tokenizer.
        cmvn: feature normalization used in training.
        cuts: a Lhotse ``CutSet``, one supervision with text per cut.
        search: greedy or beam search and its settings (default: :class:`SearchConfig`'s
            defaults, greedy search).
        lm: token LM fused by a beam search (its weight and token bonus are in ``search``).
        ctc: decode the best path of the auxiliary CTC head instead (a diagnostic; offline
            only; ``search`` is not used).
        streaming: feed the audio chunk by chunk through
            :class:`~fairstream.decoding.streaming.StreamingRecognizer`.
        chunk_ms: streaming chunk size.
        max_duration: seconds of audio per offline batch.
        speakers: ``speakers.csv`` table; its columns are joined on ``speaker_id``.
        split: value of the ``split`` column when ``speakers`` has none.
        on_error: ``skip`` leaves out cuts whose audio or transcript is unusable and lists
            them as ``(cut_id, reason)`` in ``df.attrs["skipped"]``; ``raise`` stops.
        progress: progress bar.

    Returns:
        The results table (see :mod:`fairstream.results`), in cut-id order;
        ``attrs["skipped"]`` lists skipped cuts (empty unless ``on_error="skip"``).

    Raises:
        InputDataError: CTC decoding with ``streaming``; an LM with greedy search or of
            another vocabulary.
        CorpusError: a cut without exactly one transcribed supervision, or whose audio is
            unusable: unreadable, bad samples, too short for one feature frame (named, in both
            modes).
    """
    from fairstream.decoding.beam import beam_search
    from fairstream.decoding.ctc import ctc_greedy_search
    from fairstream.decoding.greedy import greedy_search

    search = search if search is not None else SearchConfig()
    if streaming and ctc:
        raise InputDataError("the CTC head is decoded offline only; drop --streaming")
    beam = None if ctc else beam_search_for(search, lm)
    if beam is not None:
        beam.check(model.vocab_size, model.blank_id)
    skipped: list[tuple[str, str]] = []
    cut_list = []
    for c in sorted(cuts, key=lambda c: c.id):
        if len(c.supervisions) != 1 or c.supervisions[0].text is None:
            reason = f"cut {c.id} needs exactly one supervision with a transcript"
            _skip_or_raise(CorpusError(reason), c.id, on_error, skipped)
        else:
            cut_list.append(c)
    model.eval()
    spk_table = None
    if speakers is not None and "speaker_id" in speakers.columns:
        spk_table = speakers.astype({"speaker_id": str}).set_index("speaker_id")
    hyps: dict[str, tuple[str, tuple[float, ...]]] = {}
    bar = tqdm(total=len(cut_list), desc="decode", unit="utt", disable=not progress)
    if streaming:
        from fairstream.decoding.streaming import StreamingRecognizer

        rec = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=chunk_ms, search=beam,
                                  max_symbols_per_frame=search.max_symbols_per_frame)
        rate = rec.fbank_config.sample_rate
        step = int(rate * chunk_ms / 1000)
        for cut in cut_list:
            bar.update(1)
            try:
                final = _stream_cut(rec, cut, rate, step)
            except CorpusError as exc:  # bad data; model errors propagate as they are
                _skip_or_raise(exc, cut.id, on_error, skipped)
                continue
            hyps[cut.id] = (final.text, tuple(final.timestamps))
    else:
        for features, lens, cut_ids in _batches(cut_list, cmvn, max_duration, on_error,
                                                skipped):
            enc, enc_lens = model.encode(features, lens)
            if ctc:
                found = ctc_greedy_search(model, enc, enc_lens)
            elif beam is None:
                found = greedy_search(model, enc, enc_lens,
                                      max_symbols_per_frame=search.max_symbols_per_frame)
            else:
                found = beam_search(model, enc, enc_lens, beam)
            for cid, h in zip(cut_ids, found):
                hyps[cid] = (tokenizer.decode(list(h.tokens)), tuple(h.timestamps))
            bar.update(len(cut_ids))
    bar.close()
    cut_list = [c for c in cut_list if c.id in hyps]

    refs = [normalize(c.supervisions[0].text) for c in cut_list]
    hyp_texts = [normalize(hyps[c.id][0]) for c in cut_list]
    counts = score_pairs(refs, hyp_texts, normalized=True)
    rows = []
    for cut, ref, hyp, cnt in zip(cut_list, refs, hyp_texts, counts):
        sup = cut.supervisions[0]
        row: dict[str, Any] = {  # Any: a table row of mixed column types
            "utt_id": sup.id, "speaker_id": str(sup.speaker or ""), "ref": ref, "hyp": hyp,
            "n_ref_words": cnt.ref_words, "sub": cnt.substitutions, "del": cnt.deletions,
            "ins": cnt.insertions, "hits": cnt.hits, "duration": float(cut.duration),
            "timestamps": [float(t) for t in hyps[cut.id][1]],
        }
        for k, v in _metadata(cut, spk_table).items():
            if k not in row:
                row[k] = v
        if split is not None and row.get("split") is None:
            row["split"] = split
        rows.append(row)
    df = order_columns(pd.DataFrame(rows))
    df.attrs["skipped"] = skipped
    return df


def summarize_wer(df: pd.DataFrame, by: Sequence[str] = ("accent",)) -> pd.DataFrame:
    """WER overall and per group, Σerrors / Σreference words.

    Args:
        df: results table.
        by: grouping columns (none: the overall row only).

    Returns:
        One row per group plus an ``overall`` row (group columns set to ``"overall"``) with
        ``utterances, speakers, ref_words, sub, del, ins, errors, wer``.

    Raises:
        InputDataError: a grouping column is missing (named).
    """
    for col in by:
        if col not in df.columns:
            raise InputDataError(f"results table has no column {col!r} to group by")

    def _agg(part: pd.DataFrame) -> dict[str, Any]:  # Any: counts and a float
        total = ErrorCounts(int(part["sub"].sum()), int(part["del"].sum()),
                            int(part["ins"].sum()), int(part["hits"].sum()))
        return {"utterances": len(part), "speakers": part["speaker_id"].nunique(),
                "ref_words": total.ref_words, "sub": total.substitutions,
                "del": total.deletions, "ins": total.insertions, "errors": total.errors,
                "wer": total.wer if total.ref_words else float("nan")}

    rows = []
    if by:
        for key, part in df.groupby(list(by), dropna=False, sort=True):
            keys = key if isinstance(key, tuple) else (key,)
            rows.append({**dict(zip(by, keys)), **_agg(part)})
    rows.append({**{c: "overall" for c in by}, **_agg(df)})
    return pd.DataFrame(rows)


def write_trn_pair(df: pd.DataFrame, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``ref.trn`` and ``hyp.trn`` (NIST sclite format) for the results table."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ids = df["utt_id"].astype(str).tolist()
    spk = df["speaker_id"].astype(str).tolist()
    ref = write_trn(directory / "ref.trn", ids, df["ref"].tolist(), spk, normalized=True)
    hyp = write_trn(directory / "hyp.trn", ids, df["hyp"].tolist(), spk, normalized=True)
    return ref, hyp
