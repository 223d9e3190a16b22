"""Many recognition streams in one process, batched through the encoder chunk by chunk.

:class:`StreamingEngine` holds a model backend (:class:`Backend`) once and any number of
:class:`Stream` objects. Each stream extracts its own fbank features online and normalizes
them as the backend says; whenever streams have a full model chunk ready,
:meth:`StreamingEngine.step` runs one batched encoder call for all of them and continues their
greedy searches as one batch. :class:`TorchBackend` (used by :class:`BatchedRecognizer`)
stacks the PyTorch encoder states (``stack_states``), runs one ``encoder.stream`` call and
splits the states again (``select_state``); a stream's results are those of
:class:`~fairstream.decoding.streaming.StreamingRecognizer` on the same audio (tested),
whichever streams share its batches. :class:`~fairstream.serve.onnx_backend.OnnxBackend` does
the same with an ONNX export through onnxruntime.

Endpointing (:class:`EndpointConfig`) follows sherpa-onnx's three rules: a segment ends after
enough trailing silence (encoder frames since the last emitted token) or at a maximum length;
its final text is reported, ``segment`` increments and the search restarts from the blank
context while the encoder and the features carry on.

Threading: :meth:`StreamingEngine.accept`, :meth:`~StreamingEngine.take_chunk` and
:meth:`~StreamingEngine.take_rest` touch a stream's feature buffer and belong to one thread
(the server's event loop); :meth:`~StreamingEngine.step` touches only the encoder and search
states and may run in a worker thread on chunks taken before.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from fairstream.decoding.greedy import GreedyState, greedy_search_chunk, init_greedy_state
from fairstream.decoding.hypothesis import frame_seconds
from fairstream.decoding.streaming import StreamingRecognizer
from fairstream.errors import InputDataError
from fairstream.features.fbank import Cmvn, FbankConfig, OnlineFbankExtractor
from fairstream.models.state import cat_states
from fairstream.models.transducer import Transducer
from fairstream.tokenizer import Tokenizer

__all__ = [
    "Backend",
    "BatchedRecognizer",
    "EndpointConfig",
    "EndpointRule",
    "SearchView",
    "Stream",
    "StreamResult",
    "StreamingEngine",
    "TorchBackend",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndpointRule:
    """One endpointing rule (sherpa-onnx's ``EndpointRule``).

    Attributes:
        must_contain_nonsilence: The segment must have emitted a token for the rule to apply.
        min_trailing_silence: Seconds since the last emitted token (or since the segment start
            if none) must be at least this.
        min_utterance_length: The segment must be at least this many seconds long.
    """

    must_contain_nonsilence: bool
    min_trailing_silence: float
    min_utterance_length: float

    def activated(self, *, has_tokens: bool, trailing_silence: float, length: float) -> bool:
        return ((has_tokens or not self.must_contain_nonsilence)
                and trailing_silence >= self.min_trailing_silence
                and length >= self.min_utterance_length)


@dataclass(frozen=True)
class EndpointConfig:
    """sherpa-onnx's default rules: rule1 ends a segment after 2.4 s without a token even if
    nothing was decoded, rule2 after 1.2 s of silence following a token, rule3 at 20 s."""

    rule1: EndpointRule = EndpointRule(False, 2.4, 0.0)
    rule2: EndpointRule = EndpointRule(True, 1.2, 0.0)
    rule3: EndpointRule = EndpointRule(False, 0.0, 20.0)
    enabled: bool = True

    def is_endpoint(self, *, has_tokens: bool, trailing_silence: float, length: float) -> bool:
        return self.enabled and any(
            r.activated(has_tokens=has_tokens, trailing_silence=trailing_silence, length=length)
            for r in (self.rule1, self.rule2, self.rule3)
        )


@dataclass(frozen=True)
class StreamResult:
    """A message for the client: the current segment's text.

    Attributes:
        text: Decoded text of the segment so far.
        tokens: Token pieces of the segment.
        timestamps: Emission time of each token in seconds from the segment start.
        segment: Index of the segment in the stream (0, 1, ...).
        start_time: Start of the segment in seconds from the stream start.
        is_final: The segment ended (endpoint or end of stream); its text will not change.
        is_eof: The stream ended; no further results follow.
    """

    text: str
    tokens: tuple[str, ...]
    timestamps: tuple[float, ...]
    segment: int
    start_time: float
    is_final: bool
    is_eof: bool

    def as_json(self) -> dict[str, Any]:  # Any: JSON values
        return {
            "text": self.text,
            "segment": self.segment,
            "is_final": self.is_final,
            "is_eof": self.is_eof,
            "start_time": round(self.start_time, 3),
            "tokens": list(self.tokens),
            "timestamps": [round(t, 3) for t in self.timestamps],
        }


@dataclass(eq=False)
class Stream:
    """The state of one audio stream (create with :meth:`StreamingEngine.new_stream`).

    Attributes:
        samples_accepted: Audio samples received.
        segment: Index of the current segment.
        frames_before_segment: Encoder frames of the stream before the current segment.
        chunk_arrivals: Per ready chunk not yet processed, the caller's timestamp of the
            audio that completed it (what partial-result latency is measured from).
    """

    extractor: OnlineFbankExtractor
    encoder_state: Any  # Any: the backend's own encoder state
    search: Any  # Any: the backend's own search state
    pending: np.ndarray
    samples_accepted: int = 0
    segment: int = 0
    frames_before_segment: int = 0
    features_fed: int = 0
    finished: bool = False
    chunk_arrivals: deque[float] = field(default_factory=deque)


@dataclass(frozen=True)
class SearchView:
    """What the engine reads from a stream's search state: the segment's token ids, the
    encoder frame of each (from the segment start) and the encoder frames searched."""

    tokens: list[int]
    frames: list[int]
    frames_done: int


class Backend(Protocol):
    """The model side of :class:`StreamingEngine`: features, the batched encoder and search.

    Attributes:
        fbank_config: Feature settings of the model.
        chunk_frames: Feature frames per model chunk.
        seconds_per_frame: Seconds per encoder frame the search steps over.
    """

    fbank_config: FbankConfig
    chunk_frames: int
    seconds_per_frame: float

    def normalize(self, frames: np.ndarray) -> np.ndarray:
        """Features as the encoder takes them (CMVN, or as they are if the model folds it)."""
        ...

    def fresh_encoder(self) -> Any:  # Any: the backend's encoder state of one stream
        ...

    def fresh_search(self) -> Any:  # Any: the backend's search state of one stream
        ...

    def forward(self, streams: Sequence[Stream], chunks: Sequence[np.ndarray], *,
                final: bool) -> None:
        """One batched encoder call and greedy search; updates each stream's
        ``encoder_state`` and ``search``."""
        ...

    def view(self, search: Any) -> SearchView:  # Any: the backend's search state
        ...

    def text(self, tokens: list[int]) -> str:
        ...

    def pieces(self, tokens: list[int]) -> tuple[str, ...]:
        ...


class TorchBackend:
    """The PyTorch model: ``stack_states`` / ``select_state`` around one ``encoder.stream``
    call, then the batched greedy search.

    Raises:
        InputDataError: on a bad chunk size or mismatched tokenizer / CMVN.
    """

    def __init__(self, model: Transducer, tokenizer: Tokenizer, cmvn: Cmvn, *,
                 chunk_ms: int = 160, max_symbols_per_frame: int = 3) -> None:
        reference = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=chunk_ms,
                                        max_symbols_per_frame=max_symbols_per_frame)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cmvn = cmvn
        self.fbank_config: FbankConfig = reference.fbank_config
        self.chunk_frames: int = reference.chunk_frames
        self.max_symbols_per_frame = max_symbols_per_frame
        self.seconds_per_frame: float = frame_seconds(model.subsampling,
                                                      self.fbank_config.frame_shift)
        with torch.inference_mode():
            self._fresh_encoder = model.encoder.init_state(1)
            self._fresh_search = init_greedy_state(model, 1)

    def normalize(self, frames: np.ndarray) -> np.ndarray:
        return self.cmvn.apply(frames)

    def fresh_encoder(self) -> Any:  # Any: the encoder's own state type
        return self._fresh_encoder

    def fresh_search(self) -> GreedyState:
        return self._fresh_search

    @torch.inference_mode()
    def forward(self, streams: Sequence[Stream], chunks: Sequence[np.ndarray], *,
                final: bool) -> None:
        enc = self.model.encoder
        dim = self.fbank_config.num_mel_bins
        t = max(c.shape[0] for c in chunks)
        x = torch.zeros(len(chunks), t, dim)
        for i, c in enumerate(chunks):
            x[i, : c.shape[0]] = torch.from_numpy(np.ascontiguousarray(c))
        x_lens = torch.tensor([c.shape[0] for c in chunks], dtype=torch.long)
        state = enc.stack_states([s.encoder_state for s in streams])
        y, y_lens, state = self.model.stream(x, x_lens, state, final=final)
        search = greedy_search_chunk(self.model, y, y_lens, _stack_search(
            [s.search for s in streams]), max_symbols_per_frame=self.max_symbols_per_frame)
        for i, s in enumerate(streams):
            index = torch.tensor([i], dtype=torch.long)
            s.encoder_state = enc.select_state(state, index)
            s.search = _select_search(search, i)

    def view(self, search: GreedyState) -> SearchView:
        return SearchView(list(search.tokens[0]), list(search.frames[0]),
                          int(search.frames_done[0]))

    def text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def pieces(self, tokens: list[int]) -> tuple[str, ...]:
        return tuple(self.tokenizer.id_to_piece(t) for t in tokens)


class StreamingEngine:
    """Greedy streaming recognition of many streams with batched encoder calls.

    Args:
        backend: The model (:class:`TorchBackend`, or the ONNX export's
            :class:`~fairstream.serve.onnx_backend.OnnxBackend`).
        endpoint: Endpointing rules (``EndpointConfig(enabled=False)`` for none).
    """

    def __init__(self, backend: Backend, *, endpoint: EndpointConfig | None = None) -> None:
        self.backend = backend
        self.fbank_config: FbankConfig = backend.fbank_config
        self.chunk_frames = backend.chunk_frames
        self.endpoint = endpoint or EndpointConfig()
        self.sample_rate = self.fbank_config.sample_rate
        self.seconds_per_frame = backend.seconds_per_frame

    @property
    def chunk_samples(self) -> int:
        """Audio samples per model chunk (the feature frame shift times the chunk frames)."""
        return self.chunk_frames * round(self.sample_rate * self.fbank_config.frame_shift)

    def new_stream(self) -> Stream:
        return Stream(
            extractor=OnlineFbankExtractor(self.fbank_config),
            encoder_state=self.backend.fresh_encoder(),
            search=self.backend.fresh_search(),
            pending=np.zeros((0, self.fbank_config.num_mel_bins), dtype=np.float32),
        )

    def accept(self, stream: Stream, samples: np.ndarray, arrival: float = 0.0) -> int:
        """Feed ``(n,)`` float32 audio; return how many model chunks are now ready.

        Raises:
            InputDataError: after the stream was finished, or on malformed audio.
        """
        if stream.finished:
            raise InputDataError("audio after the end of the stream")
        before = stream.pending.shape[0] // self.chunk_frames
        frames = stream.extractor.accept(samples)
        stream.samples_accepted += int(samples.shape[0])
        if frames.shape[0]:
            stream.pending = np.concatenate([stream.pending, self.backend.normalize(frames)],
                                            axis=0)
        ready = stream.pending.shape[0] // self.chunk_frames
        stream.chunk_arrivals.extend([arrival] * (ready - before))
        return ready

    def ready(self, stream: Stream) -> bool:
        return stream.pending.shape[0] >= self.chunk_frames

    def take_chunk(self, stream: Stream) -> np.ndarray:
        """Remove and return the next full chunk of normalized features."""
        if not self.ready(stream):
            raise InputDataError("take_chunk: no full chunk is ready")
        chunk = stream.pending[: self.chunk_frames]
        stream.pending = stream.pending[self.chunk_frames:]
        return chunk

    def take_rest(self, stream: Stream) -> np.ndarray:
        """End the stream's audio and return all features not yet taken (the final chunk)."""
        if not stream.finished:
            frames = stream.extractor.finish()
            if frames.shape[0]:
                stream.pending = np.concatenate([stream.pending, self.backend.normalize(frames)])
            stream.finished = True
        rest, stream.pending = stream.pending, stream.pending[:0]
        return rest

    def step(self, streams: Sequence[Stream], chunks: Sequence[np.ndarray], *,
             final: bool = False) -> list[StreamResult]:
        """Run one encoder call and one batched greedy search over ``streams``.

        Args:
            streams: Distinct streams.
            chunks: One feature chunk per stream (from :meth:`take_chunk`; with ``final``,
                from :meth:`take_rest`, any length, 0 included).
            final: The streams' last call: the encoder also emits the frames held back for
                lookahead, and every stream ends with a final, end-of-stream result.

        Returns:
            Per stream, the current segment's text; final (``is_final``) when an endpoint or
            the end of the stream closes the segment, after which an endpoint starts the
            next segment.
        """
        if len(streams) != len(chunks) or not streams:
            raise InputDataError(f"step: {len(streams)} streams and {len(chunks)} chunks")
        lens = [c.shape[0] for c in chunks]
        if not final and any(n != self.chunk_frames for n in lens):
            raise InputDataError(f"step: chunks of {lens} frames, expected {self.chunk_frames}")
        # a stream shorter than one analysis window never fed the encoder: nothing to flush
        run = [i for i, s in enumerate(streams) if lens[i] or s.features_fed]
        if run:
            self.backend.forward([streams[i] for i in run], [chunks[i] for i in run],
                                 final=final)
        for s, n in zip(streams, lens):
            s.features_fed += n
        return [self._advance(s, final=final) for s in streams]

    def _advance(self, s: Stream, *, final: bool) -> StreamResult:
        view = self.backend.view(s.search)
        spf = self.seconds_per_frame
        last = view.frames[-1] + 1 if view.frames else 0
        endpoint = not final and self.endpoint.is_endpoint(
            has_tokens=bool(view.frames), trailing_silence=(view.frames_done - last) * spf,
            length=view.frames_done * spf)
        result = StreamResult(
            text=self.backend.text(view.tokens),
            tokens=self.backend.pieces(view.tokens),
            timestamps=tuple(f * spf for f in view.frames),
            segment=s.segment,
            start_time=s.frames_before_segment * spf,
            is_final=final or endpoint,
            is_eof=final,
        )
        if endpoint:
            logger.debug("endpoint: segment %d ends after %d encoder frames", s.segment,
                         view.frames_done)
            s.frames_before_segment += view.frames_done
            s.segment += 1
            s.search = self.backend.fresh_search()
        return result


class BatchedRecognizer(StreamingEngine):
    """A :class:`StreamingEngine` over the PyTorch model (:class:`TorchBackend`).

    Args:
        model: Transducer with a streaming encoder.
        tokenizer: Its tokenizer.
        cmvn: Feature normalization used in training.
        chunk_ms: Model chunk (checked as :class:`StreamingRecognizer` checks it).
        endpoint: Endpointing rules (``EndpointConfig(enabled=False)`` for none).
        max_symbols_per_frame: Greedy symbol limit per encoder frame.

    Raises:
        InputDataError: on a bad chunk size or mismatched tokenizer / CMVN.
    """

    def __init__(self, model: Transducer, tokenizer: Tokenizer, cmvn: Cmvn, *,
                 chunk_ms: int = 160, endpoint: EndpointConfig | None = None,
                 max_symbols_per_frame: int = 3) -> None:
        backend = TorchBackend(model, tokenizer, cmvn, chunk_ms=chunk_ms,
                               max_symbols_per_frame=max_symbols_per_frame)
        super().__init__(backend, endpoint=endpoint)
        self.chunk_ms = chunk_ms
        self.model = backend.model
        self.tokenizer = tokenizer
        self.cmvn = cmvn
        self.max_symbols_per_frame = max_symbols_per_frame


def _stack_search(states: Sequence[GreedyState]) -> GreedyState:
    return GreedyState(
        predictor_state=cat_states([s.predictor_state for s in states]),
        predictor_proj=torch.cat([s.predictor_proj for s in states]),
        tokens=tuple(t for s in states for t in s.tokens),
        frames=tuple(f for s in states for f in s.frames),
        scores=torch.cat([s.scores for s in states]),
        frames_done=torch.cat([s.frames_done for s in states]),
    )


def _select_search(state: GreedyState, i: int) -> GreedyState:
    index = torch.tensor([i], dtype=torch.long)
    return GreedyState(
        predictor_state=state.predictor_state.select(index),
        predictor_proj=state.predictor_proj[i: i + 1],
        tokens=(state.tokens[i],),
        frames=(state.frames[i],),
        scores=state.scores[i: i + 1],
        frames_done=state.frames_done[i: i + 1],
    )
