"""ONNX export of streaming transducers (sherpa-onnx's ``lstm`` layout) and the runtimes that
run it: our own onnxruntime streaming loop and sherpa-onnx.

Needs the ``[serve]`` extra (``onnx``, ``onnxruntime``, ``sherpa-onnx``).
"""

from __future__ import annotations

from fairstream.export.onnx import (
    MODEL_FILES,
    ExportInfo,
    export_transducer,
    quantize_int8,
    read_export_info,
)
from fairstream.export.runtime import (
    OnnxStreamingRecognizer,
    encoder_frames,
    model_paths,
    read_tokens,
    sherpa_recognizer,
    sherpa_transcribe,
    tail_padding,
    tokens_to_text,
)

__all__ = [
    "MODEL_FILES",
    "ExportInfo",
    "OnnxStreamingRecognizer",
    "encoder_frames",
    "export_transducer",
    "model_paths",
    "quantize_int8",
    "read_export_info",
    "read_tokens",
    "sherpa_recognizer",
    "sherpa_transcribe",
    "tail_padding",
    "tokens_to_text",
]
