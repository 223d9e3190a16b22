"""The ``fairstream`` command line. Commands are thin: parse, build a config, call the library.

Sub-commands are imported lazily so that ``fairstream --help`` stays fast and works on the
base install: torch is not imported until a command needs it, and ``fairstream audit`` never
needs it. A command that needs a missing optional extra stops with a message naming it.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

__all__ = ["main"]

# command name -> "module:attribute" of a click.Command
_COMMANDS: dict[str, str] = {
    "corpus": "fairstream.cli.corpus:corpus",
    "train": "fairstream.cli.train:train",
    "decode": "fairstream.cli.decode:decode",
    "lm": "fairstream.cli.lm:lm",
    "transcribe": "fairstream.cli.transcribe:transcribe",
    "audit": "fairstream.cli.audit:audit",
    "sv": "fairstream.cli.sv:sv",
    "mitigate": "fairstream.cli.mitigate:mitigate",
    "compare": "fairstream.cli.mitigate:compare",
    "demo": "fairstream.cli.demo:demo",
    "export": "fairstream.cli.export:export",
    "serve": "fairstream.cli.serve:serve",
    "client": "fairstream.cli.client:client",
    "mt": "fairstream.cli.mt:mt",
}

_HELP = {
    "corpus": "Build, import and inspect speech corpora.",
    "train": "Train a model from a recipe (YAML config).",
    "decode": "Decode a cut set with a checkpoint into a results table.",
    "lm": "Fit a token n-gram LM for shallow fusion in beam search.",
    "transcribe": "Transcribe a WAV file, optionally streaming.",
    "audit": "Find the speaker cohorts a recognizer serves worst.",
    "sv": "Speaker embeddings, verification and fairness of SV.",
    "mitigate": "Fine-tune for an audit's worst cohort (EWC, ...) and measure.",
    "compare": "Compare two results tables per cohort, paired (before/after).",
    "demo": "Run the whole story on the embedded demo corpus.",
    "export": "Export a checkpoint to ONNX for sherpa-onnx and onnxruntime.",
    "serve": "Serve streaming recognition over WebSockets.",
    "client": "Stream a WAV file to a recognition server.",
    "mt": "Multi-talker recognition: train, decode and score mixed sessions.",
}


# top-level module of an optional dependency -> the extra that installs it
_EXTRAS: dict[str, str] = {
    "torch": "asr",
    "lhotse": "asr",
    "kaldi_native_fbank": "asr",
    "sentencepiece": "asr",
    "soundfile": "asr",
    "yaml": "asr",
    "espeakng_loader": "corpus",
    "zipcodes": "corpus",
    "onnx": "serve",
    "onnxruntime": "serve",
    "sherpa_onnx": "serve",
    "websockets": "serve",
    "prometheus_client": "serve",
}


class _LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:  # Any: whatever the sub-command returns
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            extra = _EXTRAS.get((exc.name or "").split(".")[0])
            if extra is None:
                raise
            raise click.ClickException(
                f"this command needs the [{extra}] extra ({exc.name} is not installed): "
                f"pip install 'fairstream[{extra}]'"
            ) from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(module_name)
        cmd = getattr(module, attr)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{target} is not a click command")
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="fairstream")
def main(verbose: int) -> None:
    """fairstream: streaming speech recognition and the fairness work around it.

    \b
    A typical session:
      fairstream corpus build --preset demo --out data/demo
      fairstream train --config recipes/lstm_transducer.yaml --corpus data/demo --out exp/lstm
      fairstream decode --checkpoint exp/lstm/averaged.pt --corpus data/demo --out results.parquet
      fairstream audit --results results.parquet --speakers data/demo/speakers.csv --out audit/
    or everything at once: fairstream demo --out demo_out
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="%(levelname)s %(name)s: %(message)s")
