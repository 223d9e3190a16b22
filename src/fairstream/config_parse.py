"""Plain data (parsed YAML/JSON) to nested frozen dataclasses, with strict checking.

:func:`from_dict` builds a dataclass from a mapping: an unknown key anywhere is an
:class:`~fairstream.errors.InputDataError` naming its full key path (``optim.lrr``), and every
value is checked (and, where unambiguous, coerced: ``"1e-3"`` for a float) against its field's
type hint. :func:`to_dict` goes back to plain JSON/YAML-friendly data; :func:`apply_overrides`
applies ``a.b=c`` command-line overrides to plain data.

A dataclass whose checks depend on more than one field, or whose part is typed by another
field (an encoder's options depend on its name), defines ``config_checked(path)``: it runs
after the fields are built and returns the checked (possibly normalized) instance; its errors
name keys under ``path``.

The module imports neither torch nor the training code, so model, training, speaker and
decoding configurations all share it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, Union, runtime_checkable

import yaml

from fairstream._lines import read_text
from fairstream.errors import InputDataError

__all__ = [
    "PathChecked",
    "apply_overrides",
    "from_dict",
    "join_path",
    "load_yaml",
    "load_yaml_file",
    "naming_file",
    "to_dict",
]

T = TypeVar("T")


@runtime_checkable
class PathChecked(Protocol):
    """A config dataclass with checks of its own, run by :func:`from_dict` after building it."""

    def config_checked(self, path: str) -> Any:  # Any: returns its own type (no Self in 3.10)
        """Check the instance; return it (or a normalized copy). ``path``: its key path."""
        ...


def join_path(path: str, key: str) -> str:
    """Key path of ``key`` inside the section at ``path`` (``""`` is the root)."""
    return f"{path}.{key}" if path else key


def _is_union(tp: object) -> bool:
    return typing.get_origin(tp) is Union or isinstance(tp, types.UnionType)


def _type_name(tp: object) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _fail(path: str, expected: object, value: object) -> InputDataError:
    return InputDataError(
        f"config key {path or '<root>'}: expected {_type_name(expected)}, got {value!r}"
    )


def _coerce(tp: object, value: object, path: str) -> object:
    """Check ``value`` against the type hint ``tp`` and coerce it where unambiguous."""
    if tp is Any or tp is object:  # Any: the hint ``Any`` accepts every value
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_union(tp):
        non_none = [a for a in args if a is not type(None)]
        if value is None:
            if type(None) in args:
                return None
            raise _fail(path, tp, value)
        dataclass_arms = [a for a in non_none if dataclasses.is_dataclass(a)]
        if isinstance(value, Mapping) and len(dataclass_arms) == 1:
            return _coerce(dataclass_arms[0], value, path)
        for arm in non_none:
            try:
                return _coerce(arm, value, path)
            except InputDataError:
                continue
        raise _fail(path, tp, value)
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(a is value for a in args)):
            return value
        raise InputDataError(
            f"config key {path}: {value!r} is not one of {', '.join(repr(a) for a in args)}"
        )
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        return from_dict(tp, value, path=path)
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise _fail(path, tp, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise InputDataError(
                f"config key {path}: expected {len(args)} values, got {len(value)} ({value!r})"
            )
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (list, Sequence):
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise _fail(path, tp, value)
        inner = args[0] if args else Any  # Any: a bare ``list`` hint means ``list[Any]``
        return [_coerce(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _fail(path, tp, value)
        kt, vt = args if args else (Any, Any)  # Any: a bare ``dict`` hint, any keys and values
        return {
            _coerce(kt, k, f"{path}.{k}"): _coerce(vt, v, f"{path}.{k}") for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise _fail(path, tp, value)
    if tp is int:
        if isinstance(value, bool):
            raise _fail(path, tp, value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise _fail(path, tp, value)
    if tp is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond the float range
                number = math.inf
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise _fail(path, tp, value)
        if not math.isfinite(number):  # a config is stored as JSON, which has no NaN or inf
            raise InputDataError(f"config key {path}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _fail(path, tp, value)
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _fail(path, tp, value)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _fail(path, tp, value)
    return value


def from_dict(cls: type[T], data: object, *, path: str = "") -> T:
    """Build the dataclass ``cls`` (recursively) from plain data, checking keys and types.

    Args:
        cls: a dataclass type; nested dataclass fields are built from nested mappings.
        data: a mapping (``None`` means "all defaults").
        path: key path of ``data`` inside the whole config, used in error messages.

    Raises:
        InputDataError: an unknown key, a missing required key or a value of the wrong type;
            the message names the full key path.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputDataError(
            f"config key {path or '<root>'}: expected a mapping for {cls.__name__}, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise InputDataError(
            f"unknown config key {join_path(path, unknown[0])} "
            f"(known keys of {path or '<root>'}: {', '.join(sorted(fields))})"
        )
    kwargs: dict[str, object] = {}
    for name, f in fields.items():
        if not f.init:
            continue
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], join_path(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputDataError(f"config key {join_path(path, name)} is required")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputDataError):
            raise
        raise InputDataError(f"config key {path or '<root>'}: {exc}") from exc
    if isinstance(obj, PathChecked):
        return typing.cast(T, obj.config_checked(path))
    return obj


def to_dict(obj: object) -> Any:  # Any: plain JSON data, which callers index
    """Turn nested dataclasses into plain JSON/YAML data (tuples become lists, paths strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        raise InputDataError(f"config value {obj!r} is not finite")
    return obj


def _plain(value: object, path: str, _open: frozenset[int] = frozenset()) -> Any:
    """A deep copy of parsed YAML/JSON as plain JSON data (keys as strings, tuples as lists).

    Raises:
        InputDataError: a value JSON cannot hold (a date, a set, bytes) or a structure that
            contains itself (a YAML alias of its own anchor), named by its key path.
    """
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in _open:
            raise InputDataError(f"config key {path or '<root>'} contains itself (YAML alias)")
        inner = _open | {id(value)}
        if isinstance(value, Mapping):
            return {str(k): _plain(v, join_path(path, str(k)), inner) for k, v in value.items()}
        return [_plain(v, f"{path}[{i}]", inner) for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise InputDataError(
        f"config key {path or '<root>'}: {value!r} is a {type(value).__name__}; a config holds "
        "strings, numbers, booleans, null, lists and mappings"
    )


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no type hints
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (instead of keeping the
    last value silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Any: YAML keys and values of any type
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: SafeLoader raises its own error below
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} repeated (first on line {first})",
                    key_node.start_mark)
        out: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return out


def load_yaml(text: str, source: str | os.PathLike[str]) -> Any:  # Any: parsed YAML data
    """Parse YAML config text as plain JSON data; a repeated key is an error.

    Raises:
        InputDataError: invalid YAML (with its line), a key repeated in a mapping, a value JSON
            cannot hold, or nesting too deep; the message names ``source``.
    """
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InputDataError(f"config {source} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise InputDataError(f"config {source} is nested too deeply") from None
    try:
        return _plain(loaded, "")
    except InputDataError as exc:
        raise InputDataError(f"{source}: {exc}") from None
    except RecursionError:
        raise InputDataError(f"config {source} is nested too deeply") from None


@contextmanager
def naming_file(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Prefix the message of an :class:`InputDataError` raised inside with ``path: `` (the
    config file the bad key came from; nothing when ``path`` is None)."""
    try:
        yield
    except InputDataError as exc:
        if path is None:
            raise
        raise InputDataError(f"{path}: {exc}") from exc


# Any: plain JSON data, which callers index
def load_yaml_file(path: str | os.PathLike[str], what: str = "config") -> dict[str, Any]:
    """Read a YAML config file: a mapping at the top level (an empty file is ``{}``).

    Raises:
        InputDataError: the file is missing, unreadable or not UTF-8, or :func:`load_yaml`
            refuses it, or it holds something other than a mapping; the message names it.
    """
    loaded = load_yaml(read_text(Path(path), what), path)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InputDataError(f"{what} {path} must hold a mapping at the top level")
    return loaded


# Any: plain JSON/YAML data, which callers index
def apply_overrides(data: Mapping[str, object], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied.

    Values are parsed with ``yaml.safe_load`` (``null``, ``true``, numbers, ``[1, 2]``); a
    value that does not parse is taken as a string. Missing intermediate sections are created.

    Raises:
        InputDataError: an override without ``=`` or one that descends into a non-mapping.
    """
    out: dict[str, Any] = _plain(dict(data), "")  # Any: plain JSON data (a deep copy)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputDataError(f"override {item!r} is not of the form key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        node: dict[str, Any] = out  # Any: a section of plain JSON data
        for k, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise InputDataError(
                    f"override {item!r}: {'.'.join(parts[: k + 1])} is a value, not a section"
                )
            node = child
        node[parts[-1]] = value
    return out
