"""Export a streaming transducer to ONNX in the layout of sherpa-onnx's ``lstm`` model type.

Three graphs and a token table go into one directory:

* ``encoder.onnx``: ``x (N, T, F)`` raw log-mel frames, ``h (L, N, H)``, ``c (L, N, H + P)``
  -> ``encoder_out (N, T / S * R, J)``, ``next_h``, ``next_c``. Global CMVN is its first
  operation (``x * (1 / std) + (-mean / std)``); the LSTM stack, the output projection and
  the joiner's encoder projection follow, so ``encoder_out`` is already in joiner space.
  The causal conv front end keeps its left context in the state, as the PyTorch encoder
  does: the last ``P`` columns of ``c`` (over all ``L`` rows) carry the front end's conv
  buffers, packed layer by layer. sherpa-onnx only zero-initializes the two state tensors,
  batches them along dim 1 and feeds them back, so it runs this state unchanged, and
  ``T = decode_chunk_len``: windows do not overlap. Each encoder frame is written ``R``
  times (``frame_repeat``): a greedy search that takes one symbol per frame (sherpa-onnx's)
  over the repeated frames is exactly our greedy search with ``max_symbols_per_frame = R``
  (default 3, as ours). With ``R = S / 4`` the output frame rate would be the 40 ms that
  sherpa-onnx assumes for timestamps and endpointing; otherwise its timestamps and trailing
  silence are scaled by ``S / (4 R)`` (docs/export.md).
* ``decoder.onnx``: ``y (N, context_size)`` int64, ``-1`` read as blank ->
  ``decoder_out (N, J)`` (the predictor output after the joiner's projection).
* ``joiner.onnx``: ``encoder_out (N, J)``, ``decoder_out (N, J)`` -> ``logit (N, V)``.
* ``tokens.txt``: ``symbol id`` per line, blank ``<blk>`` at 0, SentencePiece's ``▁`` kept
  (sherpa-onnx turns a leading ``▁`` into a space).

Metadata: the encoder carries sherpa-onnx's ``model_type=lstm``, ``T``, ``decode_chunk_len``,
``num_encoder_layers``, ``d_model``, ``rnn_hidden_size`` and fairstream's own keys
(``fairstream_*``: subsampling, frame repeat, feature settings, conv buffer layout); the
decoder ``vocab_size`` and ``context_size``.

The causal LSTM encoder (:class:`~fairstream.models.encoders.lstm.LSTMEncoder`) exports in
this layout. Another streaming encoder exports in fairstream's generic layout
(:mod:`fairstream.export.generic`: ``x`` and ``state_0..k`` in, ``encoder_out`` and
``next_state_0..k`` out, ``model_type=fairstream-generic``), which our onnxruntime loop runs
and sherpa-onnx refuses. Only the stateless predictor exports; an encoder whose stream cannot
be traced, or the LSTM predictor, raise :class:`~fairstream.errors.InputDataError` naming
what is unsupported.

Dimension letters: N batch, T feature frames per chunk, F features, L LSTM layers, H LSTM
size, P packed conv-buffer columns, S subsampling, R frame repeat, J joiner size,
V vocabulary.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairstream import __version__
from fairstream.decoding.search import SearchConfig
from fairstream.errors import InputDataError
from fairstream.export.generic import (
    GENERIC_MODEL_TYPE,
    GenericEncoderGraph,
    StateSpec,
    check_generic_chunk,
    flatten_state,
    state_specs,
)
from fairstream.features.fbank import Cmvn, FbankConfig
from fairstream.models.encoders.common import CONV_KERNEL, EncoderModule
from fairstream.models.encoders.lstm import LSTMEncoder
from fairstream.models.predictor import StatelessPredictor
from fairstream.models.transducer import Transducer

__all__ = ["ExportInfo", "export_transducer", "quantize_int8", "read_export_info"]

logger = logging.getLogger(__name__)

MODEL_FILES = ("encoder.onnx", "decoder.onnx", "joiner.onnx")
_OPSET = 17
_BUFFER = CONV_KERNEL - 1  # input frames a causal conv keeps between even chunks: 2


@dataclass(frozen=True)
class ExportInfo:
    """What an export wrote, as stored in the encoder's ``fairstream_*`` metadata.

    Attributes:
        chunk_frames: T, feature frames per encoder call (``T`` and ``decode_chunk_len``).
        subsampling: S, feature frames per model encoder frame.
        frame_repeat: R, copies of each encoder frame in ``encoder_out``.
        num_layers: L.
        hidden_dim: H.
        state_columns: H + P, the last dim of ``c``.
        conv_buffers: ``(channels, frames, bins)`` of each conv layer's buffer.
        vocab_size: V.
        context_size: Predictor context (tokens).
        blank_id: Blank id (0).
        fbank: Feature settings (``FbankConfig`` fields).
        model_type: ``lstm`` (sherpa-onnx's layout) or ``fairstream-generic``.
        state: The state tensors of a generic export, in input order (empty for ``lstm``).
    """

    chunk_frames: int
    subsampling: int
    frame_repeat: int
    num_layers: int
    hidden_dim: int
    state_columns: int
    conv_buffers: tuple[tuple[int, int, int], ...]
    vocab_size: int
    context_size: int
    blank_id: int
    fbank: dict[str, float]
    model_type: str = "lstm"
    state: tuple[StateSpec, ...] = ()

    @property
    def frame_seconds(self) -> float:
        """Seconds per ``encoder_out`` frame."""
        return self.subsampling * float(self.fbank["frame_shift_ms"]) / 1000.0 / self.frame_repeat

    def sherpa_feature_kwargs(self) -> dict[str, Any]:  # Any: ints, floats and bools
        """Keyword arguments of ``sherpa_onnx.OnlineRecognizer.from_transducer`` that make its
        features ours: samples in [-1, 1] unscaled, snip_edges, no dither, our mel range."""
        return {
            "sample_rate": int(self.fbank["sample_rate"]),
            "feature_dim": int(self.fbank["num_mel_bins"]),
            "low_freq": float(self.fbank["low_freq"]),
            "high_freq": float(self.fbank["high_freq"]),
            "dither": float(self.fbank["dither"]),
            "normalize_samples": True,
            "snip_edges": True,
        }


# ---------------------------------------------------------------------- graphs
class _EncoderGraph(nn.Module):
    """CMVN + the LSTM encoder's chunk step with packed state + the joiner's encoder
    projection + frame repeat (see the module docstring)."""

    def __init__(self, model: Transducer, cmvn: Cmvn, frame_repeat: int) -> None:
        super().__init__()
        enc = model.encoder
        assert isinstance(enc, LSTMEncoder)
        self.enc = enc
        self.enc_proj = model.joiner.enc_proj
        self.frame_repeat = frame_repeat
        self.scale: Tensor
        self.shift: Tensor
        self.register_buffer("scale", torch.from_numpy(1.0 / cmvn.std).float())
        self.register_buffer("shift", torch.from_numpy(-cmvn.mean / cmvn.std).float())
        self.buffer_shapes = conv_buffer_shapes(enc)
        self.hidden = enc.hidden_dim
        self.packed = sum(ch * w * f for ch, w, f in self.buffer_shapes)
        self.columns = math.ceil(self.packed / len(enc.lstms))
        # the same LSTM weights as nn.LSTM modules taking an initial state (ONNX LSTM ops)
        self.lstms = enc.lstms

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n = x.shape[0]
        feats = x * self.scale + self.shift
        packed = c[:, :, self.hidden:].permute(1, 0, 2).reshape(n, -1)
        seq = feats.unsqueeze(1)  # (N, 1, T, F)
        new_bufs: list[Tensor] = []
        offset = 0
        for conv, (ch, w, f) in zip(self.enc.convs, self.buffer_shapes):
            size = ch * w * f
            buf = packed[:, offset:offset + size].reshape(n, ch, w, f)
            offset += size
            full = torch.cat([buf, seq], dim=2)
            new_bufs.append(full[:, :, -w:].reshape(n, size))
            seq = F.relu(conv(full))
        hid = self.enc._project(seq)
        new_h: list[Tensor] = []
        new_c: list[Tensor] = []
        for i, (norm, lstm) in enumerate(zip(self.enc.norms, self.lstms)):
            out, (h1, c1) = lstm(norm(hid), (h[i:i + 1], c[i:i + 1, :, :self.hidden]))
            hid = hid + out
            new_h.append(h1)
            new_c.append(c1)
        y = self.enc_proj(self.enc.output_proj(self.enc.output_norm(hid)))
        if self.frame_repeat > 1:
            y = y.repeat_interleave(self.frame_repeat, dim=1)
        layers = len(new_h)
        flat = torch.cat(new_bufs, dim=1)
        flat = F.pad(flat, (0, layers * self.columns - self.packed))
        packed_out = flat.reshape(n, layers, self.columns).permute(1, 0, 2)
        next_c = torch.cat([torch.cat(new_c, dim=0), packed_out], dim=2)
        return y, torch.cat(new_h, dim=0), next_c


class _DecoderGraph(nn.Module):
    """Stateless predictor over the last ``context_size`` tokens (``-1`` = blank) + the
    joiner's predictor projection."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        pred = model.predictor
        assert isinstance(pred, StatelessPredictor)
        self.pred = pred
        self.pred_proj = model.joiner.pred_proj
        self.blank_id = model.blank_id

    def forward(self, y: Tensor) -> Tensor:
        y = torch.where(y < 0, torch.full_like(y, self.blank_id), y)
        out = self.pred._context_conv(self.pred.embedding(y)).squeeze(1)
        result: Tensor = self.pred_proj(out)
        return result


class _JoinerGraph(nn.Module):
    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.joiner = model.joiner

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.joiner.joint(encoder_out, decoder_out)


# ---------------------------------------------------------------------- helpers
def conv_buffer_shapes(encoder: LSTMEncoder) -> tuple[tuple[int, int, int], ...]:
    """``(channels, frames, bins)`` of the buffer each conv layer keeps between chunks of a
    multiple of ``subsampling`` frames (its last ``kernel - stride`` input frames)."""
    return tuple((c, _BUFFER, f) for c, f in encoder._conv_in_shapes)


def _check_exportable(model: Transducer) -> None:
    problems = []
    if not isinstance(model.predictor, StatelessPredictor):
        problems.append(f"predictor {type(model.predictor).__name__} (only the stateless "
                        "predictor exports: sherpa-onnx's decoder takes token ids, no state)")
    if model.blank_id != 0:
        problems.append(f"blank id {model.blank_id} (sherpa-onnx assumes 0)")
    if problems:
        raise InputDataError("cannot export to ONNX: " + "; ".join(problems))


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: list[str],
            outputs: list[str], dynamic: dict[str, dict[int, str]]) -> None:
    # the TorchScript exporter: the graphs are small and fixed; it needs no onnxscript.
    # It restores the wrapper's train/eval mode afterwards, so the wrapper is put in eval
    # mode first: the model's own modules must come out in eval mode as they went in.
    module.eval()
    with warnings.catch_warnings():
        # tracer notes (shape checks read as constants), constant folding, LSTM batch size
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=_OPSET, dynamo=False)


class _Symbols(Protocol):
    @property
    def vocab_size(self) -> int: ...

    def id_to_piece(self, i: int) -> str: ...


def write_tokens(tokenizer: _Symbols, path: Path) -> None:
    """``symbol id`` lines; the blank is ``<blk>``.

    Raises:
        InputDataError: a symbol contains whitespace (sherpa-onnx splits lines on it).
    """
    lines = []
    for i in range(tokenizer.vocab_size):
        sym = tokenizer.id_to_piece(i)
        if not sym or any(ch.isspace() for ch in sym):
            raise InputDataError(f"token {i} ({sym!r}) is empty or contains whitespace")
        lines.append(f"{sym} {i}\n")
    path.write_text("".join(lines), encoding="utf-8")


# ---------------------------------------------------------------------- export
def export_transducer(
    model: Transducer,
    tokenizer: _Symbols,
    cmvn: Cmvn,
    out_dir: str | os.PathLike[str],
    *,
    chunk_ms: int = 160,
    frame_repeat: int | None = None,
    fbank_config: FbankConfig | None = None,
    int8: bool = False,
) -> ExportInfo:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx`` and ``tokens.txt``.

    Args:
        model: The transducer (LSTM encoder, stateless predictor, blank 0).
        tokenizer: Its tokenizer (anything with ``vocab_size`` and ``id_to_piece``).
        cmvn: Its feature normalization (folded into the encoder).
        out_dir: Output directory (created).
        chunk_ms: Feature frames per encoder call, in ms: a multiple of
            ``subsampling`` frame shifts.
        frame_repeat: R (see the module docstring); default our greedy search's
            ``max_symbols_per_frame`` (3), so the runtimes' greedy search is ours;
            ``subsampling / 4`` gives sherpa-onnx the 40 ms frames its timestamps assume.
        fbank_config: The model's feature settings (default: the training defaults).
        int8: Also write dynamically quantized ``*.int8.onnx`` next to the fp32 files.

    Returns:
        The :class:`ExportInfo` stored in the encoder's metadata.

    Raises:
        InputDataError: an unsupported model part, a bad chunk or repeat.
    """
    _check_exportable(model)
    enc, pred = model.encoder, model.predictor
    assert isinstance(enc, EncoderModule) and isinstance(pred, StatelessPredictor)
    fb = fbank_config or FbankConfig()
    frames = chunk_ms / fb.frame_shift_ms
    if frames != round(frames) or round(frames) % enc.subsampling or frames <= 0:
        raise InputDataError(f"chunk_ms {chunk_ms} must be a positive multiple of "
                             f"{enc.subsampling * fb.frame_shift_ms:g} ms (subsampling "
                             f"{enc.subsampling} x {fb.frame_shift_ms:g} ms frames)")
    repeat = frame_repeat if frame_repeat is not None else SearchConfig.max_symbols_per_frame
    if repeat < 1:
        raise InputDataError(f"frame_repeat must be >= 1, got {repeat}")
    if tokenizer.vocab_size != model.vocab_size:
        raise InputDataError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model "
                             f"{model.vocab_size} outputs")
    if cmvn.dim != enc.input_dim or fb.num_mel_bins != enc.input_dim:
        raise InputDataError(f"CMVN ({cmvn.dim}) and fbank ({fb.num_mel_bins}) dims must equal "
                             f"the encoder input ({enc.input_dim})")
    if not isinstance(enc, LSTMEncoder):
        check_generic_chunk(model.encoder, round(frames))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if isinstance(enc, LSTMEncoder):
        info = _export_lstm_encoder(model, cmvn, out, round(frames), repeat, fb)
    else:
        info = _export_generic_encoder(model, cmvn, out, round(frames), repeat, fb)
    with torch.no_grad():
        y = torch.zeros(1, info.context_size, dtype=torch.long)
        _export(_DecoderGraph(model), (y,), out / "decoder.onnx", ["y"], ["decoder_out"],
                {"y": {0: "N"}, "decoder_out": {0: "N"}})
        j = model.joiner.out.in_features
        _export(_JoinerGraph(model), (torch.zeros(1, j), torch.zeros(1, j)),
                out / "joiner.onnx", ["encoder_out", "decoder_out"], ["logit"],
                {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}})
    _add_metadata(out / "decoder.onnx", {"vocab_size": str(info.vocab_size),
                                         "context_size": str(info.context_size)})
    _add_metadata(out / "joiner.onnx", {"joiner_dim": str(j)})
    write_tokens(tokenizer, out / "tokens.txt")
    if int8:
        quantize_int8(out)
    logger.info("exported %s to %s", type(enc).__name__, out)
    return info


def _export_lstm_encoder(model: Transducer, cmvn: Cmvn, out: Path, frames: int, repeat: int,
                         fb: FbankConfig) -> ExportInfo:
    enc, pred = model.encoder, model.predictor
    assert isinstance(enc, LSTMEncoder) and isinstance(pred, StatelessPredictor)
    layers = len(enc.lstms)
    shapes = conv_buffer_shapes(enc)
    packed = sum(c * w * f for c, w, f in shapes)
    info = ExportInfo(
        chunk_frames=frames, subsampling=enc.subsampling, frame_repeat=repeat,
        num_layers=layers, hidden_dim=enc.hidden_dim,
        state_columns=enc.hidden_dim + math.ceil(packed / layers), conv_buffers=shapes,
        vocab_size=model.vocab_size, context_size=pred.context_size,
        blank_id=model.blank_id, fbank={k: float(v) for k, v in asdict(fb).items()},
    )
    with torch.no_grad():
        x = torch.zeros(1, info.chunk_frames, enc.input_dim)
        h = torch.zeros(layers, 1, enc.hidden_dim)
        c = torch.zeros(layers, 1, info.state_columns)
        _export(_EncoderGraph(model, cmvn, repeat), (x, h, c), out / "encoder.onnx",
                ["x", "h", "c"], ["encoder_out", "next_h", "next_c"],
                {"x": {0: "N"}, "h": {1: "N"}, "c": {1: "N"}, "encoder_out": {0: "N"},
                 "next_h": {1: "N"}, "next_c": {1: "N"}})
    _add_metadata(out / "encoder.onnx", {
        "model_type": "lstm", "T": str(info.chunk_frames),
        "decode_chunk_len": str(info.chunk_frames), "num_encoder_layers": str(layers),
        "d_model": str(info.hidden_dim), "rnn_hidden_size": str(info.state_columns),
        "fairstream_export": json.dumps(asdict(info)), "fairstream_version": __version__,
    })
    return info


def _export_generic_encoder(model: Transducer, cmvn: Cmvn, out: Path, frames: int,
                            repeat: int, fb: FbankConfig) -> ExportInfo:
    """``encoder.onnx`` in the generic layout (:mod:`fairstream.export.generic`)."""
    enc, pred = model.encoder, model.predictor
    assert isinstance(enc, EncoderModule) and isinstance(pred, StatelessPredictor)
    graph = GenericEncoderGraph(model, cmvn, repeat)
    specs = state_specs(graph.template)
    info = ExportInfo(
        chunk_frames=frames, subsampling=int(enc.subsampling), frame_repeat=repeat,
        num_layers=0, hidden_dim=0, state_columns=0, conv_buffers=(),
        vocab_size=model.vocab_size, context_size=pred.context_size,
        blank_id=model.blank_id, fbank={k: float(v) for k, v in asdict(fb).items()},
        model_type=GENERIC_MODEL_TYPE, state=specs,
    )
    names = [s.name for s in specs]
    outputs = ["encoder_out"] + [f"next_{n}" for n in names]
    with torch.no_grad():  # batch 1: ContextNet's depthwise unfold needs static shapes
        x = torch.zeros(1, frames, enc.input_dim)
        _export(graph, (x, *flatten_state(graph.template)), out / "encoder.onnx",
                ["x", *names], outputs, {})
    _add_metadata(out / "encoder.onnx", {
        "model_type": GENERIC_MODEL_TYPE, "T": str(frames),
        "fairstream_encoder": type(enc).__name__,
        "fairstream_export": json.dumps(asdict(info)), "fairstream_version": __version__,
    })
    return info


def quantize_int8(directory: str | os.PathLike[str]) -> list[Path]:
    """Dynamic int8 quantization (weights int8, activations quantized on the fly) of the
    three models of an export: writes ``encoder.int8.onnx`` etc. beside them."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    d = Path(directory)
    written = []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process, on the root logger
    try:
        for name in MODEL_FILES:
            target = d / name.replace(".onnx", ".int8.onnx")
            quantize_dynamic(str(d / name), str(target), weight_type=QuantType.QInt8)
            written.append(target)
    finally:
        root.setLevel(level)
    return written


def read_export_info(encoder_path: str | os.PathLike[str]) -> ExportInfo:
    """The :class:`ExportInfo` stored in an exported encoder.

    Raises:
        InputDataError: the file is not an encoder written by :func:`export_transducer`.
    """
    import onnx

    proto = onnx.load(str(encoder_path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if "fairstream_export" not in meta:
        raise InputDataError(f"{encoder_path} has no fairstream_export metadata; export it "
                             "with `fairstream export`")
    data = json.loads(meta["fairstream_export"])
    data["conv_buffers"] = tuple(tuple(s) for s in data["conv_buffers"])
    data["state"] = tuple(
        StateSpec(**{**s, "shape": tuple(s["shape"]),
                     "init": None if s["init"] is None else tuple(s["init"])})
        for s in data.get("state", ()))
    return ExportInfo(**data)

