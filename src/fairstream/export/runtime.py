"""Run an export: our own onnxruntime streaming loop, and sherpa-onnx set up for it.

:class:`OnnxStreamingRecognizer` feeds audio through our fbank extractor and the three ONNX
models chunk by chunk with greedy search (one symbol per ``encoder_out`` frame, the frames
already repeated ``frame_repeat`` times by the encoder graph), exactly as the PyTorch
:class:`~fairstream.decoding.streaming.StreamingRecognizer` with
``max_symbols_per_frame = frame_repeat``: the last, partial chunk is zero-padded and only
the encoder frames of real input are searched (the encoder is causal, so padding changes
none of them). A generic export (``model_type=fairstream-generic``) is run the same way, its
state tensors started from the layout in the metadata (zeros, or the stored initial values)
and fed back by name.

:func:`sherpa_recognizer` builds a ``sherpa_onnx.OnlineRecognizer`` with our feature
settings; :func:`sherpa_transcribe` decodes one utterance with it. sherpa-onnx runs only
complete windows of ``T`` frames and only while one more frame is ready, so the audio gets
the fewest zero samples that complete the last window (:func:`tail_padding`). That window
holds ``T / S`` encoder frames, of which the last up to ``T / S - 1`` lie wholly in the
padding: PyTorch never computes them (:func:`encoder_frames` counts the ones it does), and a
search over them can append tokens. Greedy search is causal, so the tokens sherpa-onnx emits
on those frames are dropped by their timestamps, which gives exactly the search over the
frames of real input.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from fairstream.errors import InputDataError
from fairstream.export.generic import GENERIC_MODEL_TYPE
from fairstream.export.onnx import ExportInfo, read_export_info
from fairstream.features.fbank import FbankConfig, OnlineFbankExtractor

__all__ = [
    "OnnxStreamingRecognizer",
    "encoder_frames",
    "model_paths",
    "read_tokens",
    "sherpa_recognizer",
    "sherpa_transcribe",
    "tail_padding",
    "tokens_to_text",
]

_SPACE = "\u2581"
# sherpa-onnx's transducer timestamps are encoder_out frame indices times 4 feature frame
# shifts, whatever the model's subsampling (it assumes 4x)
_SHERPA_SUBSAMPLING = 4


def model_paths(directory: str | os.PathLike[str], *, int8: bool = False) -> dict[str, Path]:
    """``encoder``, ``decoder``, ``joiner`` and ``tokens`` files of an export.

    Raises:
        InputDataError: naming a missing file.
    """
    d = Path(directory)
    suffix = ".int8.onnx" if int8 else ".onnx"
    paths = {name: d / f"{name}{suffix}" for name in ("encoder", "decoder", "joiner")}
    paths["tokens"] = d / "tokens.txt"
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        hint = " (export with --int8)" if int8 else ""
        raise InputDataError(f"export incomplete, missing {', '.join(missing)}{hint}")
    return paths


def read_tokens(path: str | os.PathLike[str]) -> list[str]:
    """Symbols of a ``tokens.txt`` by id.

    Raises:
        InputDataError: a malformed line or non-contiguous ids.
    """
    table: dict[int, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise InputDataError(f"{path}:{n}: expected 'symbol id', got {line!r}")
        table[int(parts[1])] = parts[0]
    if sorted(table) != list(range(len(table))):
        raise InputDataError(f"{path}: token ids are not 0..{len(table) - 1}")
    return [table[i] for i in range(len(table))]


def tokens_to_text(symbols: list[str], ids: list[int], blank_id: int = 0) -> str:
    """Text of token ids: symbols joined, ``▁`` a space, whitespace collapsed."""
    text = "".join(symbols[i] for i in ids if i != blank_id).replace(_SPACE, " ")
    return " ".join(text.split())


def _session(path: Path, num_threads: int) -> Any:  # Any: an onnxruntime.InferenceSession
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxStreamingRecognizer:
    """Streaming greedy recognition of one stream with the exported ONNX models.

    Args:
        directory: An export written by :func:`~fairstream.export.onnx.export_transducer`.
        int8: Use the ``*.int8.onnx`` models.
        num_threads: onnxruntime intra-op threads.

    Raises:
        InputDataError: a missing file or an encoder without fairstream metadata.
    """

    def __init__(self, directory: str | os.PathLike[str], *, int8: bool = False,
                 num_threads: int = 1) -> None:
        paths = model_paths(directory, int8=int8)
        self.info: ExportInfo = read_export_info(Path(directory) / "encoder.onnx")
        self.symbols = read_tokens(paths["tokens"])
        if len(self.symbols) != self.info.vocab_size:
            raise InputDataError(f"{paths['tokens']} has {len(self.symbols)} tokens, the model "
                                 f"{self.info.vocab_size}")
        self.encoder = _session(paths["encoder"], num_threads)
        self.decoder = _session(paths["decoder"], num_threads)
        self.joiner = _session(paths["joiner"], num_threads)
        fb = self.info.fbank
        self.fbank_config = FbankConfig(
            sample_rate=int(fb["sample_rate"]), num_mel_bins=int(fb["num_mel_bins"]),
            frame_length_ms=fb["frame_length_ms"], frame_shift_ms=fb["frame_shift_ms"],
            dither=fb["dither"], low_freq=fb["low_freq"], high_freq=fb["high_freq"],
        )
        self._extractor = OnlineFbankExtractor(self.fbank_config)
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        info = self.info
        self._extractor.reset()
        self._pending = np.zeros((0, self.fbank_config.num_mel_bins), dtype=np.float32)
        self._h = np.zeros((info.num_layers, 1, info.hidden_dim), dtype=np.float32)
        self._c = np.zeros((info.num_layers, 1, info.state_columns), dtype=np.float32)
        self._state = [
            np.zeros(spec.shape, dtype=spec.dtype) if spec.init is None
            else np.asarray(spec.init, dtype=spec.dtype).reshape(spec.shape)
            for spec in info.state
        ]
        self._context = [-1] * (info.context_size - 1) + [info.blank_id]
        self._decoder_out = self._run_decoder()
        self.tokens: list[int] = []
        self.frames: list[int] = []
        self._frames_out = 0

    def _run_decoder(self) -> np.ndarray:
        y = np.asarray([self._context[-self.info.context_size:]], dtype=np.int64)
        out: np.ndarray = self.decoder.run(None, {"y": y})[0]
        return out

    def _search(self, encoder_out: np.ndarray) -> None:
        blank = self.info.blank_id
        for t in range(encoder_out.shape[0]):
            logit = self.joiner.run(None, {"encoder_out": encoder_out[t:t + 1],
                                           "decoder_out": self._decoder_out})[0]
            best = int(np.argmax(logit[0]))
            if best != blank:
                self.tokens.append(best)
                self.frames.append(self._frames_out + t)
                self._context.append(best)
                self._decoder_out = self._run_decoder()
        self._frames_out += encoder_out.shape[0]

    def _run_chunk(self, chunk: np.ndarray, keep: int | None = None) -> None:
        if self.info.model_type == GENERIC_MODEL_TYPE:
            feeds = {"x": chunk[None]}
            feeds.update({spec.name: value for spec, value in zip(self.info.state, self._state)})
            declared = {i.name for i in self.encoder.get_inputs()}  # unread state is pruned
            out, *self._state = self.encoder.run(
                None, {k: v for k, v in feeds.items() if k in declared})
        else:
            out, self._h, self._c = self.encoder.run(
                None, {"x": chunk[None], "h": self._h, "c": self._c})
        self._search(out[0] if keep is None else out[0, :keep])

    def accept(self, samples: np.ndarray) -> None:
        """Feed audio (float32 in [-1, 1] at the feature rate); full chunks are decoded."""
        frames = self._extractor.accept(samples)
        if frames.shape[0]:
            self._pending = np.concatenate([self._pending, frames])
        size = self.info.chunk_frames
        while self._pending.shape[0] >= size:
            self._run_chunk(np.ascontiguousarray(self._pending[:size]))
            self._pending = self._pending[size:]

    def finish(self) -> str:
        """End the stream: decode the last partial chunk; the final text."""
        frames = self._extractor.finish()
        if frames.shape[0]:
            self._pending = np.concatenate([self._pending, frames])
        n = self._pending.shape[0]
        if n:
            info = self.info
            chunk = np.zeros((info.chunk_frames, self._pending.shape[1]), dtype=np.float32)
            chunk[:n] = self._pending
            self._run_chunk(chunk, keep=math.ceil(n / info.subsampling) * info.frame_repeat)
            self._pending = self._pending[:0]
        return self.text

    @property
    def text(self) -> str:
        """Text of the tokens so far."""
        return tokens_to_text(self.symbols, self.tokens, self.info.blank_id)

    def transcribe(self, samples: np.ndarray, step: int | None = None) -> str:
        """Reset, feed ``samples`` in pieces of ``step`` samples (default one chunk), finish."""
        self.reset()
        step = step or self.info.chunk_frames * self.fbank_config.shift_samples
        for start in range(0, len(samples), step):
            self.accept(samples[start:start + step])
        return self.finish()


# ---------------------------------------------------------------------- sherpa-onnx
def sherpa_recognizer(directory: str | os.PathLike[str], *, int8: bool = False,
                      num_threads: int = 1) -> Any:  # Any: a sherpa_onnx.OnlineRecognizer
    """A ``sherpa_onnx.OnlineRecognizer`` (greedy search) for an export, with our features.

    Raises:
        InputDataError: a missing file, or a generic export (``fairstream-generic``).
    """
    import sherpa_onnx

    paths = model_paths(directory, int8=int8)
    info = read_export_info(Path(directory) / "encoder.onnx")
    if info.model_type != "lstm":
        raise InputDataError(f"{paths['encoder']} has model_type {info.model_type}: only "
                             "OnnxStreamingRecognizer runs it, sherpa-onnx does not")
    return sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(paths["tokens"]), encoder=str(paths["encoder"]),
        decoder=str(paths["decoder"]), joiner=str(paths["joiner"]),
        num_threads=num_threads, decoding_method="greedy_search",
        **info.sherpa_feature_kwargs(),
    )


def _fbank_frames(num_samples: int, info: ExportInfo) -> tuple[int, FbankConfig]:
    """Feature frames (``snip_edges``) of ``num_samples`` samples, and the feature settings."""
    fb = FbankConfig(sample_rate=int(info.fbank["sample_rate"]),
                     frame_length_ms=info.fbank["frame_length_ms"],
                     frame_shift_ms=info.fbank["frame_shift_ms"])
    return max(0, 1 + (num_samples - fb.window_samples) // fb.shift_samples), fb


def encoder_frames(num_samples: int, info: ExportInfo) -> int:
    """``encoder_out`` frames PyTorch streaming (and :class:`OnnxStreamingRecognizer`)
    search for an utterance of ``num_samples`` samples: ``ceil(frames / S) * R``, where
    ``frames = 1 + (num_samples - window) // shift`` are its feature frames. Encoder frame
    ``j`` sees feature frames ``<= j * S`` only, so each of these is computed from real
    audio alone, in every runtime."""
    frames, _ = _fbank_frames(num_samples, info)
    return math.ceil(frames / info.subsampling) * info.frame_repeat


def tail_padding(num_samples: int, info: ExportInfo) -> int:
    """Zero samples after ``num_samples`` that let sherpa-onnx run the window holding the
    last feature frame: the frames must reach the next multiple of ``T``, plus one (it runs a
    window only while one more frame is ready). Feeding less loses the last window; feeding
    a further ``T * shift`` samples or more runs a window of padding alone."""
    frames, fb = _fbank_frames(num_samples, info)
    needed = math.ceil(frames / info.chunk_frames) * info.chunk_frames + 1
    return max(0, (needed - 1) * fb.shift_samples + fb.window_samples - num_samples)


def sherpa_transcribe(recognizer: Any, info: ExportInfo, samples: np.ndarray) -> str:
    """Decode one utterance with a sherpa-onnx recognizer (``recognizer`` from
    :func:`sherpa_recognizer`, endpointing off); the text with whitespace collapsed.

    The audio gets :func:`tail_padding` zeros; of the tokens sherpa-onnx then finds, those on
    ``encoder_out`` frames at or beyond :func:`encoder_frames` (computed over the padding
    alone) are dropped, so the result is the greedy search over the frames PyTorch computes.
    """
    rate = int(info.fbank["sample_rate"])
    stream = recognizer.create_stream()
    stream.accept_waveform(rate, np.asarray(samples, dtype=np.float32))
    stream.accept_waveform(rate, np.zeros(tail_padding(len(samples), info), dtype=np.float32))
    stream.input_finished()
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    result = recognizer.get_result_all(stream)
    unit = _SHERPA_SUBSAMPLING * float(info.fbank["frame_shift_ms"]) / 1000.0
    last = encoder_frames(len(samples), info)
    kept = [tok for tok, ts in zip(result.tokens, result.timestamps) if round(ts / unit) < last]
    text = "".join(kept).replace(_SPACE, " ")
    return " ".join(text.split())
