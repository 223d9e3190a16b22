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

Special tokens (such as multi-talker turn marks ``<sot>``, ``<eot>``) are added to a trained
tokenizer with :meth:`Tokenizer.with_special_tokens`: they take the ids after the base
vocabulary, are listed in ``tokenizer.json`` under ``special_tokens``, and are recognized
verbatim in text before normalization (``"<sot> hello <eot>"``). The model's output rows grow
with :func:`fairstream.training.warm_start.extend_vocabulary`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
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
_SPECIAL_RE = re.compile(r"<[a-z0-9_]+>")


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
        special_tokens: Sequence[str] = (),
    ) -> None:
        self.model_type: ModelType = model_type
        self.path = path
        self._sp = sp
        self._specials: tuple[str, ...] = ()
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
        self._base_size = len(self._symbols) if sp is None else int(sp.get_piece_size())
        self._specials = self._checked_specials(special_tokens)
        self._special_ids = {t: self._base_size + k for k, t in enumerate(self._specials)}
        self._special_split = (
            re.compile("(" + "|".join(re.escape(t) for t in self._specials) + ")")
            if self._specials else None
        )

    def _checked_specials(self, tokens: Sequence[str]) -> tuple[str, ...]:
        out: list[str] = []
        for token in tokens:
            if not isinstance(token, str) or not _SPECIAL_RE.fullmatch(token):
                raise InputDataError(
                    f"special token {token!r} must look like <name> (lower-case letters, "
                    "digits, _)"
                )
            if token in out or any(self.id_to_piece(i) == token for i in range(self._base_size)):
                raise InputDataError(f"special token {token} is already in the vocabulary")
            out.append(token)
        return tuple(out)

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
        logger.info("%s tokenizer with %d pieces written to %s",
                    model_type, sp.get_piece_size(), out)
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
        specials = meta.get("special_tokens", [])
        if not isinstance(specials, list):
            raise InputDataError(f"{meta_path}: special_tokens must be a list")
        if mtype == "char":
            return cls("char", alphabet=meta["alphabet"], path=root, special_tokens=specials)
        if mtype in ("bpe", "unigram"):
            model_path = root / meta.get("model", "tokenizer.model")
            try:
                proto = model_path.read_bytes()
                sp = spm.SentencePieceProcessor(model_proto=proto)
            except FileNotFoundError:
                raise InputDataError(f"tokenizer model {model_path} does not exist") from None
            except RuntimeError as e:
                raise InputDataError(f"tokenizer model {model_path} is corrupt: {e}") from e
            return cls(mtype, sp=sp, path=root, special_tokens=specials)
        raise InputDataError(f"{meta_path}: unknown model_type {mtype!r}")

    def with_special_tokens(self, tokens: Sequence[str]) -> Tokenizer:
        """A copy with ``tokens`` added after the vocabulary (and any earlier special tokens).

        The new tokens get ids ``vocab_size, vocab_size + 1, ...``; every existing id keeps its
        meaning. The copy is not saved anywhere (see :meth:`save`).

        Raises:
            InputDataError: a token that is not of the form ``<name>`` or already exists.
        """
        return Tokenizer(self.model_type, sp=self._sp,
                         alphabet=self._symbols if self._sp is None else None,
                         special_tokens=[*self._specials, *tokens])

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` (and ``tokenizer.model``) to ``out_dir``; return the dir.

        A tokenizer without special tokens writes the same files as :meth:`train`.
        """
        out = Path(out_dir)
        meta: dict[str, object] = {"format": _FORMAT, "version": 1,
                                   "model_type": self.model_type}
        if self._sp is None:
            meta.update(vocab_size=self._base_size, blank_id=0, alphabet=self._symbols)
        else:
            _atomic_write(out / "tokenizer.model", self._sp.serialized_model_proto())
            meta.update(vocab_size=self._base_size, blank_id=0, model="tokenizer.model")
        if self._specials:
            meta["special_tokens"] = list(self._specials)
        _atomic_write(out / "tokenizer.json", (json.dumps(meta, indent=1) + "\n").encode())
        return out

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
        """Number of output symbols V, blank and special tokens included."""
        return self._base_size + len(self._specials)

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """The special tokens, in id order (their ids follow the base vocabulary)."""
        return self._specials

    def encode(self, text: str) -> list[int]:
        """Normalize ``text`` and map it to token ids (never 0).

        Special tokens written verbatim in ``text`` map to their ids; the text between them
        is normalized and encoded as usual.
        """
        if self._special_split is None:
            return self._encode_plain(text)
        ids: list[int] = []
        for part in self._special_split.split(text):
            if part in self._special_ids:
                ids.append(self._special_ids[part])
            elif part.strip():
                ids.extend(self._encode_plain(part))
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        norm = normalize(text)
        if self._sp is None:
            try:
                return [self._index[_SPACE if c == " " else c] for c in norm]
            except KeyError as e:  # cannot happen for normalized text; invariant guard
                raise InputDataError(
                    f"character {e.args[0]!r} of {text!r} not in alphabet"
                ) from None
        return list(self._sp.encode(norm, out_type=int))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for many texts."""
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids to text; blanks (id 0) are dropped, special tokens written as words."""
        keep = [int(i) for i in ids if int(i) != 0]
        for i in keep:
            if not 0 < i < self.vocab_size:
                raise InputDataError(
                    f"token id {i} outside the vocabulary of size {self.vocab_size}"
                )
        if not self._specials:
            return self._decode_plain(keep)
        words: list[str] = []
        run: list[int] = []
        for i in [*keep, -1]:
            if 0 <= i < self._base_size:
                run.append(i)
                continue
            if run:
                words.append(self._decode_plain(run))
                run = []
            if i >= self._base_size:
                words.append(self._specials[i - self._base_size])
        return " ".join(w for w in words if w)

    def _decode_plain(self, keep: list[int]) -> str:
        if self._sp is None:
            return " ".join("".join(self._symbols[i] for i in keep).replace(_SPACE, " ").split())
        return str(self._sp.decode(keep))

    def id_to_piece(self, i: int) -> str:
        """The symbol of id ``i``."""
        if i >= self._base_size:
            return self._specials[i - self._base_size]
        if self._sp is None:
            return self._symbols[i]
        return str(self._sp.id_to_piece(i))

    def __repr__(self) -> str:
        return f"Tokenizer(model_type={self.model_type!r}, vocab_size={self.vocab_size})"
