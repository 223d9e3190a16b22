"""Decode cuts with a trained transducer into the results table, and summarize its WER.

The results table has one row per utterance (see the project contracts): ``utt_id,
speaker_id, ref, hyp, n_ref_words, sub, del, ins, hits, duration, timestamps`` plus the
speaker metadata passed through (``accent, gender, age_band, lat, lon, zip, split`` and any
other column of ``speakers.csv``). Texts are normalized; error counts come from
:func:`fairstream.metrics.wer.score_pairs`. Corpus and group WER are Σerrors / Σwords.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from fairstream.data.text import normalize
from fairstream.errors import CheckpointError, CorpusError, InputDataError
from fairstream.features.fbank import Cmvn
from fairstream.metrics.wer import ErrorCounts, score_pairs, write_trn
from fairstream.training.checkpoint import load_checkpoint

__all__ = [
    "METADATA_COLUMNS",
    "RESULT_COLUMNS",
    "LoadedModel",
    "decode_cuts",
    "load_transducer",
    "read_results",
    "summarize_wer",
    "write_results",
    "write_trn_pair",
]

logger = logging.getLogger(__name__)

#: Columns every results table has, in order.
RESULT_COLUMNS = ["utt_id", "speaker_id", "ref", "hyp", "n_ref_words", "sub", "del", "ins",
                  "hits", "duration", "timestamps"]
#: Speaker metadata columns passed through when known.
METADATA_COLUMNS = ["accent", "gender", "age_band", "lat", "lon", "zip", "split"]
_PARQUET_KEY = b"fairstream"


@dataclass(frozen=True)
class LoadedModel:
    """A transducer checkpoint ready for inference.

    Attributes:
        model: the transducer, in eval mode.
        tokenizer: its tokenizer (vocabulary checked against the model).
        cmvn: the feature normalization used in training.
        config: the resolved training config (plain data).
        path: the checkpoint file.
    """

    model: Any
    tokenizer: Any
    cmvn: Cmvn
    config: dict[str, Any]
    path: Path


def load_transducer(path: str | os.PathLike[str]) -> LoadedModel:
    """Rebuild the model, tokenizer and CMVN stored in a training checkpoint.

    Raises:
        CheckpointError: the file is corrupt, is not a transducer checkpoint, its weights do
            not fit its config, or its tokenizer and model vocabularies differ.
    """
    from fairstream.models.factory import build_model, model_config_from_dict
    from fairstream.tokenizer import Tokenizer

    ck = load_checkpoint(Path(path))
    files = ck.extra.get("tokenizer_files")
    if ck.extra.get("task") != "transducer" or not files or "cmvn_mean" not in ck.extra:
        raise CheckpointError(
            f"{ck.path} is not a transducer checkpoint written by `fairstream train` "
            "(no tokenizer or CMVN inside)"
        )
    try:
        model_cfg = model_config_from_dict(ck.config["model"])
    except (KeyError, InputDataError) as exc:
        raise CheckpointError(f"{ck.path}: stored model config is unusable: {exc}") from exc
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            Path(tmp, Path(name).name).write_bytes(bytes(data.numpy().tobytes()))
        try:
            tokenizer = Tokenizer.load(tmp)
        except InputDataError as exc:
            raise CheckpointError(f"{ck.path}: stored tokenizer is unusable: {exc}") from exc
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise CheckpointError(
            f"{ck.path}: tokenizer vocabulary ({tokenizer.vocab_size}) does not match the "
            f"model's vocab_size ({model_cfg.vocab_size})"
        )
    model = build_model(model_cfg)
    try:
        model.load_state_dict(ck.model)
    except RuntimeError as exc:
        raise CheckpointError(f"{ck.path}: weights do not fit the stored config: "
                              f"{str(exc).splitlines()[0]}") from exc
    model.eval()
    cmvn = Cmvn(mean=ck.extra["cmvn_mean"].numpy(), std=ck.extra["cmvn_std"].numpy())
    return LoadedModel(model=model, tokenizer=tokenizer, cmvn=cmvn, config=ck.config,
                       path=ck.path)


def _metadata(cut: Any, speakers: pd.DataFrame | None) -> dict[str, Any]:
    sup = cut.supervisions[0]
    meta: dict[str, Any] = {}
    if speakers is not None and sup.speaker is not None and str(sup.speaker) in speakers.index:
        row = speakers.loc[str(sup.speaker)]
        meta.update({k: (None if pd.isna(v) else v) for k, v in row.items()})
    for k, v in (sup.custom or {}).items():
        if not isinstance(v, (dict, list)):
            meta[k] = v
    return meta


def _collate_or_skip(group: list[Any], tokenizer: Any, cmvn: Cmvn, on_error: str,
                     skipped: list[tuple[str, str]]) -> Any:
    """Collate a batch; with ``on_error="skip"`` drop (and record) the cuts that fail."""
    from fairstream.training.data import collate_cuts

    try:
        return collate_cuts(group, tokenizer=tokenizer, cmvn=cmvn)
    except (CorpusError, InputDataError):
        if on_error != "skip":
            raise
    good = []
    for cut in group:
        try:
            collate_cuts([cut], tokenizer=tokenizer, cmvn=cmvn)
            good.append(cut)
        except (CorpusError, InputDataError) as exc:
            skipped.append((cut.id, str(exc)))
            logger.warning("skipping %s", exc)
    return collate_cuts(good, tokenizer=tokenizer, cmvn=cmvn) if good else None


def _batches(cuts: list[Any], tokenizer: Any, cmvn: Cmvn, max_duration: float, on_error: str,
             skipped: list[tuple[str, str]]) -> Any:
    """Offline batches of at most ``max_duration`` seconds, similar durations together."""
    ordered = sorted(cuts, key=lambda c: (c.duration, c.id))
    groups: list[list[Any]] = [[]]
    total = 0.0
    for cut in ordered:
        if groups[-1] and total + cut.duration > max_duration:
            groups.append([])
            total = 0.0
        groups[-1].append(cut)
        total += cut.duration
    for group in groups:
        if group:
            batch = _collate_or_skip(group, tokenizer, cmvn, on_error, skipped)
            if batch is not None:
                yield batch


@torch.no_grad()
def decode_cuts(
    model: Any,
    tokenizer: Any,
    cmvn: Cmvn,
    cuts: Any,
    *,
    method: Literal["greedy", "beam", "ctc"] = "greedy",
    beam: int = 4,
    search: Any = None,
    streaming: bool = False,
    chunk_ms: int = 160,
    max_duration: float = 120.0,
    speakers: pd.DataFrame | None = None,
    split: str | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    progress: bool = True,
) -> pd.DataFrame:
    """Decode every cut and score it against its transcript.

    Args:
        model: a transducer in eval mode.
        tokenizer: its tokenizer.
        cmvn: feature normalization used in training.
        cuts: a Lhotse ``CutSet``, one supervision with text per cut.
        method: ``greedy``, ``beam`` (beam search, see ``search``) or ``ctc`` (best path
            of the auxiliary CTC head, a diagnostic; offline only).
        beam: beam width when ``search`` is not given.
        search: a :class:`~fairstream.decoding.beam.BeamSearchConfig` (beam width, symbols
            per frame, LM fusion) for ``method="beam"``; default: width ``beam``, no LM.
        streaming: feed the audio chunk by chunk through
            :class:`~fairstream.decoding.streaming.StreamingRecognizer` (greedy or beam).
        chunk_ms: streaming chunk size.
        max_duration: seconds of audio per offline batch.
        speakers: ``speakers.csv`` table; its columns are joined on ``speaker_id``.
        split: value of the ``split`` column when ``speakers`` has none.
        on_error: ``skip`` leaves out cuts whose audio or transcript is unusable and lists
            them as ``(cut_id, reason)`` in ``df.attrs["skipped"]``; ``raise`` stops.
        progress: progress bar.

    Returns:
        The results table (see the module doc), in cut-id order; ``attrs["skipped"]`` lists
        skipped cuts (empty unless ``on_error="skip"``).

    Raises:
        InputDataError: CTC decoding with ``streaming``; an unknown method; bad search settings.
        CorpusError: a cut without exactly one transcribed supervision (named).
    """
    from fairstream.decoding.beam import BeamSearchConfig, beam_search
    from fairstream.decoding.ctc import ctc_greedy_search
    from fairstream.decoding.greedy import greedy_search
    if method not in ("greedy", "beam", "ctc"):
        raise InputDataError(f"unknown decoding method {method!r}; use greedy, beam or ctc")
    if streaming and method == "ctc":
        raise InputDataError("the CTC head is decoded offline only; drop --streaming")
    if method == "beam":
        search = search if search is not None else BeamSearchConfig(beam=beam)
        search.check(model.vocab_size, model.blank_id)
    else:
        search = None
    skipped: list[tuple[str, str]] = []
    cut_list = []
    for c in sorted(cuts, key=lambda c: c.id):
        if len(c.supervisions) != 1 or c.supervisions[0].text is None:
            reason = f"cut {c.id} needs exactly one supervision with a transcript"
            if on_error != "skip":
                raise CorpusError(reason)
            skipped.append((c.id, reason))
        else:
            cut_list.append(c)
    model.eval()
    spk_table = None
    if speakers is not None and "speaker_id" in speakers.columns:
        spk_table = speakers.astype({"speaker_id": str}).set_index("speaker_id")
    hyps: dict[str, tuple[str, tuple[float, ...]]] = {}
    bar = tqdm(total=len(cut_list), desc="decode", unit="utt", disable=not progress)
    if streaming:
        from lhotse.audio.utils import AudioLoadingError

        from fairstream.decoding.streaming import StreamingRecognizer
        from fairstream.features.fbank import resample

        rec = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=chunk_ms, search=search)
        step = int(rec.fbank_config.sample_rate * chunk_ms / 1000)
        for cut in cut_list:
            bar.update(1)
            try:
                audio = cut.load_audio()
                audio = audio[0] if audio.ndim == 2 else audio
                if int(cut.sampling_rate) != rec.fbank_config.sample_rate:
                    audio = resample(audio, int(cut.sampling_rate), rec.fbank_config.sample_rate)
                rec.reset()
                for start in range(0, len(audio), step):
                    rec.accept(np.ascontiguousarray(audio[start:start + step], dtype=np.float32))
                final = rec.finish()
            except (AudioLoadingError, OSError, RuntimeError, ValueError) as exc:  # bad audio
                if on_error != "skip":
                    raise CorpusError(f"cut {cut.id}: {exc}") from exc
                skipped.append((cut.id, f"cut {cut.id}: {exc}"))
                logger.warning("skipping cut %s: %s", cut.id, exc)
                continue
            hyps[cut.id] = (final.text, tuple(final.timestamps))
    else:
        for batch in _batches(cut_list, tokenizer, cmvn, max_duration, on_error, skipped):
            enc, enc_lens = model.encode(batch.features, batch.feature_lens)
            if method == "greedy":
                found = greedy_search(model, enc, enc_lens)
            elif method == "ctc":
                found = ctc_greedy_search(model, enc, enc_lens)
            else:
                found = beam_search(model, enc, enc_lens, search)
            for cid, h in zip(batch.cut_ids, found):
                hyps[cid] = (tokenizer.decode(list(h.tokens)), tuple(h.timestamps))
            bar.update(len(batch.cut_ids))
    bar.close()
    cut_list = [c for c in cut_list if c.id in hyps]

    refs = [normalize(c.supervisions[0].text) for c in cut_list]
    hyp_texts = [normalize(hyps[c.id][0]) for c in cut_list]
    counts = score_pairs(refs, hyp_texts, normalized=True)
    rows = []
    for cut, ref, hyp, cnt in zip(cut_list, refs, hyp_texts, counts):
        sup = cut.supervisions[0]
        row: dict[str, Any] = {
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
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=RESULT_COLUMNS)
    for col in METADATA_COLUMNS:
        if col not in df.columns:
            df[col] = None
    if "zip" in df.columns:
        df["zip"] = df["zip"].map(lambda z: None if z is None or pd.isna(z) else str(z).zfill(5))
    extra = [c for c in df.columns if c not in RESULT_COLUMNS and c not in METADATA_COLUMNS]
    df = df[RESULT_COLUMNS + METADATA_COLUMNS + extra].reset_index(drop=True)
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

    def _agg(part: pd.DataFrame) -> dict[str, Any]:
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


def write_results(df: pd.DataFrame, path: str | os.PathLike[str],
                  config: Mapping[str, Any] | None = None) -> Path:
    """Write the results table as Parquet (atomically) with the config JSON in its metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_PARQUET_KEY] = json.dumps(dict(config or {}), sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_results(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a results table and the config stored with it."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputDataError(f"cannot read results table {path}: {exc}") from exc
    raw = (table.schema.metadata or {}).get(_PARQUET_KEY, b"{}")
    return table.to_pandas(), json.loads(raw)


def write_trn_pair(df: pd.DataFrame, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``ref.trn`` and ``hyp.trn`` (NIST sclite format) for the results table."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ids = df["utt_id"].astype(str).tolist()
    spk = df["speaker_id"].astype(str).tolist()
    ref = write_trn(directory / "ref.trn", ids, df["ref"].tolist(), spk, normalized=True)
    hyp = write_trn(directory / "hyp.trn", ids, df["hyp"].tolist(), spk, normalized=True)
    return ref, hyp

