"""The ONNX export as a :class:`~fairstream.serve.engine.Backend`: ``fairstream serve --onnx``.

The streams with a chunk ready run through ``encoder.onnx`` as one batch (its ``h`` and
``c`` state tensors stacked along dim 1); the greedy search then steps over the
``encoder_out`` frames of all of them together, one ``joiner.onnx`` call per frame and one
``decoder.onnx`` call for the streams that emitted a token. Features follow the export's
metadata and are not normalized here: the exported encoder folds CMVN in. Chunks and the
search are those of :class:`~fairstream.export.runtime.OnnxStreamingRecognizer` (one symbol
per ``encoder_out`` frame; the last, partial chunk zero-padded and only the frames of real
input searched), so a stream's text is that loop's on the same audio.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fairstream.errors import InputDataError
from fairstream.export.runtime import OnnxStreamingRecognizer, tokens_to_text
from fairstream.features.fbank import FbankConfig
from fairstream.serve.engine import SearchView, Stream

__all__ = ["OnnxBackend", "OnnxEncoderState", "OnnxSearchState"]


@dataclass(frozen=True)
class OnnxEncoderState:
    """``h (L, 1, H)`` and ``c (L, 1, H + P)`` of one stream."""

    h: np.ndarray
    c: np.ndarray


@dataclass(frozen=True)
class OnnxSearchState:
    """Greedy search of one segment: the decoder context and output, tokens, their frames
    and the ``encoder_out`` frames searched."""

    context: tuple[int, ...]
    decoder_out: np.ndarray
    tokens: tuple[int, ...] = ()
    frames: tuple[int, ...] = ()
    frames_done: int = 0


class OnnxBackend:
    """Batched streaming recognition with an export's ``encoder``/``decoder``/``joiner``.

    Args:
        directory: An export written by ``fairstream export``.
        int8: Use the ``*.int8.onnx`` models.
        num_threads: onnxruntime intra-op threads per model.

    Raises:
        InputDataError: a missing file, an encoder without fairstream metadata, an export
            not in the ``lstm`` layout or a ``tokens.txt`` of another size.
    """

    def __init__(self, directory: str | os.PathLike[str], *, int8: bool = False,
                 num_threads: int = 1) -> None:
        runtime = OnnxStreamingRecognizer(directory, int8=int8, num_threads=num_threads)
        if runtime.info.model_type != "lstm":
            raise InputDataError(
                f"{directory}: the server batches exports in the 'lstm' layout; this one is "
                f"{runtime.info.model_type!r} (an encoder whose state does not fit it). Serve "
                "its checkpoint with --checkpoint, or run the export with "
                "fairstream.export.OnnxStreamingRecognizer one stream at a time")
        self.info = runtime.info
        self.symbols = runtime.symbols
        self.encoder = runtime.encoder
        self.decoder = runtime.decoder
        self.joiner = runtime.joiner
        self.fbank_config: FbankConfig = runtime.fbank_config
        self.chunk_frames: int = self.info.chunk_frames
        self.seconds_per_frame: float = self.info.frame_seconds
        info = self.info
        self._fresh_encoder = OnnxEncoderState(
            h=np.zeros((info.num_layers, 1, info.hidden_dim), dtype=np.float32),
            c=np.zeros((info.num_layers, 1, info.state_columns), dtype=np.float32))
        context = (-1,) * (info.context_size - 1) + (info.blank_id,)
        self._fresh_search = OnnxSearchState(context=context,
                                             decoder_out=self._decode([context])[0])

    def _decode(self, contexts: Sequence[tuple[int, ...]]) -> np.ndarray:
        size = self.info.context_size
        y = np.asarray([c[-size:] for c in contexts], dtype=np.int64)
        out: np.ndarray = self.decoder.run(None, {"y": y})[0]
        return out

    def normalize(self, frames: np.ndarray) -> np.ndarray:
        return frames  # the exported encoder applies CMVN itself

    def fresh_encoder(self) -> OnnxEncoderState:
        return self._fresh_encoder

    def fresh_search(self) -> OnnxSearchState:
        return self._fresh_search

    def forward(self, streams: Sequence[Stream], chunks: Sequence[np.ndarray], *,
                final: bool) -> None:
        # a final chunk may be longer than T: it runs as consecutive encoder calls
        size = self.info.chunk_frames
        for k in range(max(1, math.ceil(max(c.shape[0] for c in chunks) / size))):
            run = [i for i, c in enumerate(chunks) if k == 0 or c.shape[0] > k * size]
            self._forward([streams[i] for i in run],
                          [chunks[i][k * size: (k + 1) * size] for i in run])

    def _forward(self, streams: Sequence[Stream], chunks: Sequence[np.ndarray]) -> None:
        info = self.info
        x = np.zeros((len(chunks), info.chunk_frames, self.fbank_config.num_mel_bins),
                     dtype=np.float32)
        for i, c in enumerate(chunks):
            x[i, : c.shape[0]] = c
        # frames of real input: all of a full chunk; of a final one, those it reaches
        keep = [math.ceil(c.shape[0] / info.subsampling) * info.frame_repeat for c in chunks]
        h = np.concatenate([s.encoder_state.h for s in streams], axis=1)
        c = np.concatenate([s.encoder_state.c for s in streams], axis=1)
        out, h, c = self.encoder.run(None, {"x": x, "h": h, "c": c})
        searches = self._search([s.search for s in streams], out, keep)
        for i, s in enumerate(streams):
            s.encoder_state = OnnxEncoderState(h=h[:, i: i + 1], c=c[:, i: i + 1])
            s.search = searches[i]

    def _search(self, states: list[OnnxSearchState], encoder_out: np.ndarray,
                keep: list[int]) -> list[OnnxSearchState]:
        """Greedy search, one symbol per frame, over ``encoder_out[i, :keep[i]]``."""
        contexts = [list(s.context) for s in states]
        tokens = [list(s.tokens) for s in states]
        frames = [list(s.frames) for s in states]
        decoder_out = np.concatenate([s.decoder_out[None] for s in states])
        for t in range(max(keep, default=0)):
            active = [i for i, k in enumerate(keep) if t < k]
            logit = self.joiner.run(None, {"encoder_out": encoder_out[active, t],
                                           "decoder_out": decoder_out[active]})[0]
            best = np.argmax(logit, axis=1)
            emitted = [i for i, b in zip(active, best) if int(b) != self.info.blank_id]
            for i, b in zip(active, best):
                if int(b) != self.info.blank_id:
                    contexts[i].append(int(b))
                    tokens[i].append(int(b))
                    frames[i].append(states[i].frames_done + t)
            if emitted:
                decoder_out[emitted] = self._decode([tuple(contexts[i]) for i in emitted])
        size = self.info.context_size
        return [OnnxSearchState(context=tuple(contexts[i][-size:]), decoder_out=decoder_out[i],
                                tokens=tuple(tokens[i]), frames=tuple(frames[i]),
                                frames_done=s.frames_done + keep[i])
                for i, s in enumerate(states)]

    def view(self, search: OnnxSearchState) -> SearchView:
        return SearchView(list(search.tokens), list(search.frames), search.frames_done)

    def text(self, tokens: list[int]) -> str:
        return tokens_to_text(self.symbols, tokens, self.info.blank_id)

    def pieces(self, tokens: list[int]) -> tuple[str, ...]:
        return tuple(self.symbols[t] for t in tokens)
