"""Streaming recognition: audio chunks in, partial transcripts out.

:class:`StreamingRecognizer` chains the online fbank extractor, CMVN, the encoder's
``stream`` and a chunked search with explicit state: greedy, or beam search with optional LM
fusion. Its final result equals the offline search on the same audio (``compute_fbank`` ->
CMVN -> ``model.encode`` -> :func:`~fairstream.decoding.greedy.greedy_search` or
:func:`~fairstream.decoding.beam.beam_search`): the features are identical for any chunking,
the encoder streams exactly (the encoder contract,
:class:`~fairstream.models.encoders.base.StreamingEncoder`), and the search loops are the
same code.

Lookahead and chunks: an encoder declares ``right_context``, the encoder frames of future
input each output frame may use. Its ``stream`` emits a frame only once that lookahead has
been fed, so the recognizer keeps feeding chunks and searches the frames that come out; at
:meth:`StreamingRecognizer.finish` it makes the final call, which emits the frames held back.
Model chunks must meet the encoder's ``chunk_frames_min`` and ``chunk_frames_multiple``
(only the last, flushed chunk may be shorter).

Latency: a model chunk of ``chunk_ms`` is processed as soon as its last feature frame is
complete; the algorithmic latency is ``chunk_ms`` plus the encoder's lookahead
(:attr:`StreamingRecognizer.lookahead_ms`; none for the LSTM encoder) plus the 15 ms by
which a 25 ms analysis window exceeds the 10 ms frame shift.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from fairstream.decoding.beam import BeamSearch, BeamState, beam_hypothesis, beam_search_chunk
from fairstream.decoding.greedy import GreedyState, greedy_hypotheses, greedy_search_chunk
from fairstream.decoding.search import SearchConfig
from fairstream.errors import InputDataError
from fairstream.features.fbank import Cmvn, FbankConfig, OnlineFbankExtractor
from fairstream.models.transducer import Transducer

__all__ = ["PartialResult", "StreamingRecognizer"]

logger = logging.getLogger(__name__)


class _Detokenizer(Protocol):
    @property
    def vocab_size(self) -> int: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class PartialResult:
    """Transcript of a stream so far.

    Attributes:
        text: Decoded text of all tokens so far.
        tokens: Token ids so far.
        timestamps: Emission time of each token in seconds.
        audio_seconds: Audio consumed by the model so far (feature frames x frame shift).
        is_final: True for the result of :meth:`StreamingRecognizer.finish`.
    """

    text: str
    tokens: tuple[int, ...]
    timestamps: tuple[float, ...]
    audio_seconds: float
    is_final: bool


class StreamingRecognizer:
    """Recognize one audio stream incrementally.

    Args:
        model: Transducer with a streaming encoder (set to eval mode here).
        tokenizer: Anything with ``vocab_size`` and ``decode(ids) -> str``; its vocabulary
            must match the model's.
        cmvn: Feature normalization used in training.
        chunk_ms: Model chunk in milliseconds: a multiple of the feature frame shift whose
            frames meet the encoder's ``chunk_frames_min`` and ``chunk_frames_multiple``.
        max_symbols_per_frame: Greedy symbol limit per encoder frame.
        fbank_config: Feature settings (defaults to the training defaults).
        search: Beam search settings (width, symbol limit, LM fusion); ``None`` decodes
            greedily. Partial results show the best hypothesis so far. With a search,
            its own ``max_symbols_per_frame`` applies (the argument above is for greedy).

    Partial results cover the encoder frames emitted so far: with an encoder lookahead of
    ``right_context`` frames they lag the audio by that many frames more than the chunking.

    Raises:
        InputDataError: on a vocabulary or feature-dimension mismatch or a bad chunk size.
    """

    def __init__(
        self,
        model: Transducer,
        tokenizer: _Detokenizer,
        cmvn: Cmvn,
        *,
        chunk_ms: int = 160,
        max_symbols_per_frame: int = SearchConfig.max_symbols_per_frame,
        fbank_config: FbankConfig | None = None,
        search: BeamSearch | None = None,
    ) -> None:
        self.fbank_config = fbank_config or FbankConfig()
        if search is not None:
            search.check(model.vocab_size, model.blank_id)
        self.search = search
        shift_ms = self.fbank_config.frame_shift_ms
        if chunk_ms <= 0 or abs(chunk_ms / shift_ms - round(chunk_ms / shift_ms)) > 1e-6:
            raise InputDataError(
                f"chunk_ms must be a positive multiple of the {shift_ms} ms frame shift, "
                f"got {chunk_ms}"
            )
        if tokenizer.vocab_size != model.vocab_size:
            raise InputDataError(
                f"tokenizer vocabulary ({tokenizer.vocab_size}) does not match the model's "
                f"({model.vocab_size})"
            )
        if cmvn.dim != self.fbank_config.num_mel_bins:
            raise InputDataError(
                f"CMVN dimension {cmvn.dim} differs from {self.fbank_config.num_mel_bins} mel bins"
            )
        self.chunk_frames = round(chunk_ms / shift_ms)
        enc = model.encoder
        if (self.chunk_frames < enc.chunk_frames_min
                or self.chunk_frames % enc.chunk_frames_multiple):
            raise InputDataError(
                f"chunk_ms {chunk_ms} gives {self.chunk_frames} feature frames; the encoder "
                f"takes chunks of at least {enc.chunk_frames_min} frames, a multiple of "
                f"{enc.chunk_frames_multiple}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cmvn = cmvn
        self.chunk_ms = chunk_ms
        self.max_symbols_per_frame = max_symbols_per_frame
        self._extractor = OnlineFbankExtractor(self.fbank_config)
        self.reset()

    def reset(self) -> None:
        """Forget the current stream and start a new one."""
        self._extractor.reset()
        self._pending = np.zeros((0, self.fbank_config.num_mel_bins), dtype=np.float32)
        self._encoder_state: Any = None  # Any: the encoder's own state type
        self._decoder_state: GreedyState | BeamState | None = None
        self._frames_fed = 0
        self._finished = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def lookahead_ms(self) -> float:
        """Future audio the encoder uses for a frame (``right_context`` encoder frames)."""
        frames = self.model.encoder.right_context * self.model.subsampling
        return frames * self.fbank_config.frame_shift_ms

    def accept(self, samples: np.ndarray) -> list[PartialResult]:
        """Feed audio.

        Args:
            samples: ``(n,)`` float32 mono audio at the feature sample rate, any ``n >= 0``.

        Returns:
            One partial result per model chunk completed by this audio (possibly none).

        Raises:
            InputDataError: after :meth:`finish` (call :meth:`reset`), or on malformed audio.
        """
        if self._finished:
            raise InputDataError("StreamingRecognizer: accept() after finish(); call reset() first")
        frames = self._extractor.accept(samples)
        if frames.shape[0]:
            self._pending = np.concatenate([self._pending, self.cmvn.apply(frames)], axis=0)
        results = []
        while self._pending.shape[0] >= self.chunk_frames:
            chunk, self._pending = (
                self._pending[: self.chunk_frames],
                self._pending[self.chunk_frames :],
            )
            self._run(chunk)
            results.append(self._result(is_final=False))
        return results

    def finish(self) -> PartialResult:
        """End the stream: flush the remaining audio and return the final result.

        Raises:
            InputDataError: if the whole stream was too short for a single feature frame.
        """
        if not self._finished:
            frames = self._extractor.finish()
            if frames.shape[0]:
                self._pending = np.concatenate([self._pending, self.cmvn.apply(frames)], axis=0)
            if self._pending.shape[0] or self._frames_fed:
                # the final call: the encoder also emits the frames it held back for lookahead
                self._run(self._pending, final=True)
                self._pending = self._pending[:0]
            self._finished = True
            logger.debug("stream finished after %d feature frames", self._frames_fed)
        if self._frames_fed == 0:
            raise InputDataError(
                f"StreamingRecognizer: the stream has {self._extractor.num_samples_accepted} "
                f"samples, shorter than one {self.fbank_config.frame_length_ms} ms analysis window"
            )
        return self._result(is_final=True)

    @torch.inference_mode()
    def _run(self, chunk: np.ndarray, *, final: bool = False) -> None:
        x = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device).unsqueeze(0)
        x_lens = torch.tensor([x.shape[1]], dtype=torch.long, device=self.device)
        y, y_lens, self._encoder_state = self.model.stream(
            x, x_lens, self._encoder_state, final=final
        )
        if self.search is not None:
            self._decoder_state = beam_search_chunk(
                self.model, y[0, : int(y_lens[0])], self._decoder_state,  # type: ignore[arg-type]
                self.search,
            )
        else:
            self._decoder_state = greedy_search_chunk(
                self.model,
                y,
                y_lens,
                self._decoder_state,  # type: ignore[arg-type]
                max_symbols_per_frame=self.max_symbols_per_frame,
            )
        self._frames_fed += x.shape[1]

    def _result(self, *, is_final: bool) -> PartialResult:
        if self._decoder_state is None:
            tokens: tuple[int, ...] = ()
            timestamps: tuple[float, ...] = ()
        else:
            shift = self.fbank_config.frame_shift
            if isinstance(self._decoder_state, BeamState):
                hyp = beam_hypothesis(self.model, self._decoder_state, self.search,
                                      final=is_final, frame_shift=shift)
            else:
                hyp = greedy_hypotheses(self.model, self._decoder_state, frame_shift=shift)[0]
            tokens, timestamps = hyp.tokens, hyp.timestamps
        return PartialResult(
            text=self.tokenizer.decode(list(tokens)),
            tokens=tokens,
            timestamps=timestamps,
            audio_seconds=self._frames_fed * self.fbank_config.frame_shift,
            is_final=is_final,
        )
