"""Decoding sessions into SegLST turns and scoring them (``fairstream mt decode|score``).

**Decoding.** Each session's audio goes through the model whole (offline) or in chunks of
``chunk_ms`` (:class:`~fairstream.multitalker.model.MultiTalkerStream`, the same result);
every channel's tokens are cut into turns at ``<sot>``/``<eot>``
(:func:`~fairstream.multitalker.model.turns_of`) and written as SegLST with the channel as
the speaker (``ch0``, ``ch1``) and the end of the ``<eot>`` frame as the turn's end time; a
session without any recognized turn gets one empty segment (``ch0``, no words).

**Scores** (all fractions):

* ``cpwer`` and ``orc_wer`` (:mod:`fairstream.metrics.multitalker`): ORC-WER is the metric
  of separation systems (a turn may go to either channel); cpWER charges a talker moving
  between channels.
* ``turn_count_acc``: share of sessions whose number of hypothesis turns equals the
  reference's.
**The audit's rows** (:func:`session_results`): one results-table row per session and
reference speaker (:mod:`fairstream.results`: ``utt_id`` = ``<session>/<speaker>``), the
speaker's words in time order against the hypothesis stream cpWER assigned to them, so
``fairstream audit`` groups multi-talker errors by speaker metadata like any other table.

* ``eot_latency_ms_p50`` / ``_p90``: over sessions with the right turn count, reference and
  hypothesis turns paired in order of end time, the hypothesis end minus the reference end,
  in milliseconds; negative when the model closes a turn early. A hypothesis turn's end is
  the emission of its ``<eot>``, or, for a turn the model never closed, the emission of its
  last word (SegLST has no field to tell them apart).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fairstream.errors import InputDataError
from fairstream.metrics.multitalker import Segment, cp_wer, orc_wer
from fairstream.multitalker.model import MultiTalkerStream, turns_of

__all__ = ["decode_sessions", "score_sessions", "session_results"]


def decode_sessions(loaded: Any, sessions: Sequence[Any], *, streaming: bool = False,
                    chunk_ms: int = 160, progress: bool = False) -> list[Segment]:
    """SegLST hypothesis turns of ``sessions`` (``Session`` objects) by a
    ``LoadedMultiTalker``."""
    from tqdm.auto import tqdm

    from fairstream.multitalker.train import session_features

    model = loaded.model.eval()
    out: list[Segment] = []
    chunk = max(1, chunk_ms // 10)
    for s in tqdm(sessions, desc="sessions", disable=not progress):
        x = torch.from_numpy(session_features(s, loaded.cmvn)).unsqueeze(0)
        n = x.shape[1]
        if streaming:
            stream = MultiTalkerStream(model, 1)
            for start in range(0, n, chunk):
                piece = x[:, start:start + chunk]
                stream.push(piece, torch.tensor([piece.shape[1]]), final=start + chunk >= n)
            hyps = stream.hypotheses()[0]
        else:
            hyps = model.decode(x, torch.tensor([n]))[0]
        turns = []
        for c, h in enumerate(hyps):
            turns += turns_of(h, s.session_id, c, sot_id=model.sot_id, eot_id=model.eot_id,
                              decode=loaded.tokenizer.decode, frame_s=model.frame_s,
                              lookahead_s=model.lookahead_s)
        # a session where nothing was recognized still gets an (empty) entry, so scorers
        # (meeteval among them) see that it was decoded
        out += turns or [Segment(s.session_id, "ch0", 0.0, 0.0, "")]
    return out


def score_sessions(reference: Sequence[Segment], hypothesis: Sequence[Segment], *,
                   on_error: str = "raise") -> dict[str, Any]:  # Any: JSON data
    """The scores of the module docstring, and per-session rows.

    Args:
        on_error: ``raise`` on a hypothesis for a session the reference lacks; ``skip``
            leaves it out and lists it under ``excluded``.

    Raises:
        InputDataError: an unknown hypothesis session (named) with ``on_error="raise"``.
    """
    ref_ids = {s.session_id for s in reference}
    unknown = sorted({s.session_id for s in hypothesis} - ref_ids)
    if unknown and on_error != "skip":
        raise InputDataError(f"hypothesis for session(s) the reference does not have: "
                             f"{', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''} "
                             f"({len(unknown)} in all; --on-error skip leaves them out)")
    hyp = [s for s in hypothesis if s.session_id in ref_ids]
    cp, orc = cp_wer(reference, hyp), orc_wer(reference, hyp)
    by_ref: dict[str, list[Segment]] = defaultdict(list)
    by_hyp: dict[str, list[Segment]] = defaultdict(list)
    for s in reference:
        by_ref[s.session_id].append(s)
    for s in hyp:
        if s.words.strip():  # an empty segment marks a decoded session, not a turn
            by_hyp[s.session_id].append(s)
    rows, latencies = [], []
    right = 0
    for sid in sorted(by_ref):
        r, h = by_ref[sid], by_hyp.get(sid, [])
        ok = len(r) == len(h)
        right += ok
        lat = []
        if ok:
            for a, b in zip(sorted(r, key=lambda s: s.end_time),
                            sorted(h, key=lambda s: s.end_time), strict=True):
                lat.append(1000.0 * (b.end_time - a.end_time))
            latencies += lat
        rows.append({"session_id": sid, "ref_turns": len(r), "hyp_turns": len(h),
                     "ref_speakers": len({s.speaker for s in r}),
                     "cp_errors": cp.sessions[sid][0], "orc_errors": orc.sessions[sid][0],
                     "ref_words": orc.sessions[sid][1], "eot_latency_ms": lat})
    lat_arr = np.asarray(latencies, dtype=np.float64)
    return {
        "sessions": len(by_ref),
        "cpwer": cp.wer, "orc_wer": orc.wer, "ref_words": orc.length,
        "turn_count_acc": right / len(by_ref) if by_ref else float("nan"),
        "eot_latency_ms_p50": float(np.percentile(lat_arr, 50)) if lat_arr.size else None,
        "eot_latency_ms_p90": float(np.percentile(lat_arr, 90)) if lat_arr.size else None,
        "eot_turns_timed": int(lat_arr.size),
        "excluded": [{"session_id": sid, "reason": "not in the reference"} for sid in unknown],
        "per_session": rows,
    }


def session_results(reference: Sequence[Segment], hypothesis: Sequence[Segment],
                    speakers: Any = None) -> Any:  # Any: pandas DataFrames
    """The results table of a multi-talker hypothesis: one row per (session, reference
    speaker), with sub/del/ins/hits of that speaker's words against the stream the cpWER
    assignment gave them (all deletions when none), the session columns (``session_id``,
    ``channel`` = the stream, ``start``/``end`` = the speaker's first start and last end)
    and, with ``speakers`` (a ``speakers.csv`` table), the speaker's metadata. A stream left
    without a speaker is in no row (its insertions count in cpWER only).
    """
    import pandas as pd

    from fairstream.data.text import normalize
    from fairstream.metrics.wer import score_pairs
    from fairstream.results import METADATA_COLUMNS, order_columns

    cp = cp_wer(reference, hypothesis)
    ref_by: dict[tuple[str, str], list[Segment]] = defaultdict(list)
    hyp_by: dict[tuple[str, str], list[Segment]] = defaultdict(list)
    for seg in reference:
        ref_by[(seg.session_id, seg.speaker)].append(seg)
    for seg in hypothesis:
        hyp_by[(seg.session_id, seg.speaker)].append(seg)

    def words(segs: Sequence[Segment]) -> str:
        return normalize(" ".join(x.words for x in sorted(segs, key=lambda x: x.start_time)))

    keys = sorted(ref_by)
    streams = [cp.assignment.get(sid, {}).get(spk) for sid, spk in keys]
    refs = [words(ref_by[k]) for k in keys]
    hyps = [words(hyp_by[(k[0], st)]) if st is not None else "" for k, st in zip(keys, streams)]
    counts = score_pairs(refs, hyps, normalized=True)
    rows = []
    for (sid, spk), st, r, h, c in zip(keys, streams, refs, hyps, counts, strict=True):
        segs = ref_by[(sid, spk)]
        rows.append({"utt_id": f"{sid}/{spk}", "speaker_id": spk, "ref": r, "hyp": h,
                     "n_ref_words": c.ref_words, "sub": c.substitutions, "del": c.deletions,
                     "ins": c.insertions, "hits": c.hits,
                     "duration": max(x.end_time for x in segs) - min(x.start_time for x in segs),
                     "timestamps": [], "session_id": sid, "channel": st,
                     "start": min(x.start_time for x in segs),
                     "end": max(x.end_time for x in segs)})
    df = pd.DataFrame(rows)
    if speakers is not None and len(df):
        meta = [c for c in METADATA_COLUMNS if c in speakers.columns]
        df = df.merge(speakers[["speaker_id", *meta]].astype({"speaker_id": str}),
                      on="speaker_id", how="left")
    return order_columns(df)
