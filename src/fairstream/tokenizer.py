"""Tokenizers for transducer targets: SentencePiece (BPE, unigram) or characters.

Every tokenizer reserves id 0 for the transducer blank, so targets never contain 0.

* ``model_type="bpe" | "unigram"``: a SentencePiece model trained with
  ``pad_id=0, pad_piece="<blk>"`` (a control symbol that encoding never produces, i.e. the
  blank), ``unk_id=1`` and no BOS/EOS. Every character the text normalizer can emit
  (``a-z``, ``0-9``, ``'``) is passed as ``required_chars`` and SentencePiece's own
  normalization is turned off (``identity``), so ``decode(encode(t)) == normalize(t)`` for
  every text.
* ``model_type="char"``: a fixed alphabet ``<blk>, ▁ (space), ', a-z, 0-9`` (39 symbols); no
  training is needed, ``vocab_size`` is ignored and round trips are exact for every
  normalized text.

Texts are normalized with :func:`fairstream.data.text.normalize` before training and
encoding. Files written by :meth:`Tokenizer.train`: ``OUT/tokenizer.json`` (type, vocabulary
size, blank id) and, for SentencePiece models, ``OUT/tokenizer.model``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import sentencepiece as spm

from fairstream._io import atomic_write_bytes as _atomic_write
from fairstream.data.text import normalize
from fairstream.errors import InputDataError

__all__ = ["BLANK", "NORMALIZED_ALPHABET", "ModelType", "Tokenizer"]

logger = logging.getLogger(__name__)

ModelType = Literal["bpe", "unigram", "char"]

BLANK = "<blk>"
#: Every character :func:`normalize` can output besides the space.
NORMALIZED_ALPHABET = "'" + string.ascii_lowercase + string.digits
_SPACE = "\u2581"  # SentencePiece's word-boundary mark
_FORMAT = "fairstream-tokenizer"


def _clean_texts(texts: Iterable[str | bytes]) -> list[str]:
    out: list[str] = []
    for i, t in enumerate(texts):
        if isinstance(t, bytes):
            try:
                t = t.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputDataError(f"transcript #{i} is not valid UTF-8: {e}") from None
        if not isinstance(t, str):
            raise InputDataError(f"transcript #{i} is {type(t).__name__}, expected str")
        n = normalize(t)
        if not n:
            raise InputDataError(f"transcript #{i} is empty after normalization: {t!r}")
        out.append(n)
    if not out:
        raise InputDataError("no transcripts given to train the tokenizer")
    return out


class Tokenizer:
    """Text ⇄ token ids with the blank at id 0.

    Build with :meth:`train` or :meth:`load`; not with the constructor.
    """

    def __init__(
        self,
        model_type: ModelType,
        *,
        sp: spm.SentencePieceProcessor | None = None,
        alphabet: Sequence[str] | None = None,
        path: Path | None = None,
    ) -> None:
        self.model_type: ModelType = model_type
        self.path = path
        self._sp = sp
        if model_type == "char":
            if alphabet is None or alphabet[0] != BLANK:
                raise InputDataError("char tokenizer needs an alphabet starting with <blk>")
            self._symbols = list(alphabet)
            self._index = {s: i for i, s in enumerate(self._symbols)}
        elif sp is None:
            raise InputDataError(f"{model_type} tokenizer needs a SentencePiece model")
        else:
            if sp.pad_id() != 0 or sp.id_to_piece(0) != BLANK:
                raise InputDataError(
                    f"SentencePiece model {path} does not reserve id 0 for {BLANK}"
                )

    # ----------------------------------------------------------------- building
    @classmethod
    def train(
        cls,
        texts: Iterable[str | bytes],
        out_dir: str | os.PathLike[str],
        vocab_size: int = 256,
        model_type: ModelType = "bpe",
        *,
        character_coverage: float = 1.0,
        num_threads: int = 2,
    ) -> Tokenizer:
        """Train a tokenizer on transcripts and save it in ``out_dir``.

        Args:
            texts: training transcripts (str, or UTF-8 bytes); normalized before use.
            out_dir: directory for ``tokenizer.json`` (+ ``tokenizer.model``).
            vocab_size: total vocabulary including blank and ``<unk>`` (ignored for "char").
            model_type: "bpe", "unigram" or "char".
            character_coverage: SentencePiece character coverage.
            num_threads: SentencePiece training threads.

        Raises:
            InputDataError: empty or non-UTF-8 transcripts, unknown model type, or a
                vocabulary too large for the data.
        """
        if model_type not in ("bpe", "unigram", "char"):
            raise InputDataError(f"unknown tokenizer model_type {model_type!r}")
        clean = _clean_texts(texts)
        out = Path(out_dir)
        if model_type == "char":
            alphabet = [BLANK, _SPACE, *NORMALIZED_ALPHABET]
            meta = {"format": _FORMAT, "version": 1, "model_type": "char",
                    "vocab_size": len(alphabet), "blank_id": 0, "alphabet": alphabet}
            _atomic_write(out / "tokenizer.json", (json.dumps(meta, indent=1) + "\n").encode())
            logger.info("char tokenizer with %d symbols written to %s", len(alphabet), out)
            return cls("char", alphabet=alphabet, path=out)

        minimum = 2 + len(NORMALIZED_ALPHABET) + 1  # blank, unk, chars, word mark
        if vocab_size < minimum:
            raise InputDataError(
                f"vocab_size {vocab_size} is below the minimum {minimum} "
                "(blank, <unk>, every normalized character and the word mark)"
            )
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(clean),
                model_writer=model,
                model_type=model_type,
                vocab_size=vocab_size,
                pad_id=0,
                pad_piece=BLANK,
                unk_id=1,
                bos_id=-1,
                eos_id=-1,
                character_coverage=character_coverage,
                required_chars=NORMALIZED_ALPHABET,
                normalization_rule_name="identity",
                num_threads=num_threads,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                minloglevel=2,
            )
        except RuntimeError as e:
            msg = str(e)
            if "Vocabulary size" in msg or "vocab_size" in msg:
                raise InputDataError(
                    f"vocab_size {vocab_size} is too large for the {len(clean)} training "
                    f"transcripts ({model_type}): {msg.strip()}"
                ) from None
            raise InputDataError(f"SentencePiece training failed: {msg.strip()}") from e
        _atomic_write(out / "tokenizer.model", model.getvalue())
        sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
        meta = {"format": _FORMAT, "version": 1, "model_type": model_type,
                "vocab_size": sp.get_piece_size(), "blank_id": 0, "model": "tokenizer.model"}
        _atomic_write(out / "tokenizer.json", (json.dumps(meta, indent=1) + "\n").encode())
        logger.info("%s tokenizer with %d pieces written to %s", model_type, sp.get_piece_size(), out)
        return cls(model_type, sp=sp, path=out)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load from a directory written by :meth:`train` (or its ``tokenizer.json``)."""
        p = Path(path)
        meta_path = p / "tokenizer.json" if p.is_dir() else p
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputDataError(f"tokenizer file {meta_path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputDataError(f"tokenizer file {meta_path} is malformed: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise InputDataError(f"{meta_path} is not a fairstream tokenizer file")
        mtype = meta.get("model_type")
        root = meta_path.parent
        if mtype == "char":
            return cls("char", alphabet=meta["alphabet"], path=root)
        if mtype in ("bpe", "unigram"):
            model_path = root / meta.get("model", "tokenizer.model")
            try:
                proto = model_path.read_bytes()
                sp = spm.SentencePieceProcessor(model_proto=proto)
            except FileNotFoundError:
                raise InputDataError(f"tokenizer model {model_path} does not exist") from None
            except RuntimeError as e:
                raise InputDataError(f"tokenizer model {model_path} is corrupt: {e}") from e
            return cls(mtype, sp=sp, path=root)
        raise InputDataError(f"{meta_path}: unknown model_type {mtype!r}")

    # ----------------------------------------------------------------- use
    @property
    def blank_id(self) -> int:
        """Id of the transducer blank (always 0)."""
        return 0

    @property
    def unk_id(self) -> int | None:
        """Id of ``<unk>`` (SentencePiece only; the char alphabet covers all normalized text)."""
        return None if self._sp is None else int(self._sp.unk_id())

    @property
    def vocab_size(self) -> int:
        """Number of output symbols V, blank included."""
        if self._sp is None:
            return len(self._symbols)
        return int(self._sp.get_piece_size())

    def encode(self, text: str) -> list[int]:
        """Normalize ``text`` and map it to token ids (never 0)."""
        norm = normalize(text)
        if self._sp is None:
            try:
                return [self._index[_SPACE if c == " " else c] for c in norm]
            except KeyError as e:  # cannot happen for normalized text; invariant guard
                raise InputDataError(f"character {e.args[0]!r} of {text!r} not in alphabet") from None
        return list(self._sp.encode(norm, out_type=int))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for many texts."""
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids to text; blanks (id 0) are dropped."""
        keep = [int(i) for i in ids if int(i) != 0]
        for i in keep:
            if not 0 < i < self.vocab_size:
                raise InputDataError(f"token id {i} outside the vocabulary of size {self.vocab_size}")
        if self._sp is None:
            return " ".join("".join(self._symbols[i] for i in keep).replace(_SPACE, " ").split())
        return str(self._sp.decode(keep))

    def id_to_piece(self, i: int) -> str:
        """The symbol of id ``i``."""
        if self._sp is None:
            return self._symbols[i]
        return str(self._sp.id_to_piece(i))

    def __repr__(self) -> str:
        return f"Tokenizer(model_type={self.model_type!r}, vocab_size={self.vocab_size})"
