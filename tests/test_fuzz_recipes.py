"""Fuzzing the recipe loaders (``fairstream.training.config.load_config`` and
``fairstream.sv.train.load_sv_config``: YAML → ``config_parse.from_dict``) with the shipped
recipes and the default speaker-model config, mutated value by value and byte by byte."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from _fuzz import FUZZ, nasty_text, random_or_mutated, read_written
from hypothesis import given
from hypothesis import strategies as st

from fairstream.sv.train import SvTrainConfig, load_sv_config
from fairstream.training.config import config_to_json, load_config, to_dict

RECIPES = sorted((Path(__file__).parents[1] / "src" / "fairstream" / "recipes").glob("*.yaml"))
#: (recipe data, its loader): the shipped transducer recipes, the default SV config.
SOURCES = [(yaml.safe_load(p.read_text(encoding="utf-8")), load_config) for p in RECIPES] + [
    (to_dict(SvTrainConfig()), load_sv_config)]
#: YAML scalars and structures of every kind: null, booleans, NaN/inf, huge numbers, dates,
#: lists, mappings, anchors.
YAML_VALUES = ("null", "~", "true", "no", ".nan", ".inf", "-.inf", "1e400", "-1", "0",
               "99999999999999999999999", "2001-12-14", "[]", "[1, 2]", "{}", "{a: 1}",
               "!!binary aGk=", "!!set {a, b}", "'x'", "&a [*a]", "*nope", "!!python/tuple [1]")


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:  # Any: YAML data
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))] or [path]
    return [path]


@st.composite
def recipe_text(draw: st.DrawFn) -> tuple[bytes, Callable[[Path], object]]:
    """A recipe with some values replaced, keys added or dropped, then maybe corrupted byte
    by byte; and its loader."""
    data, loader = draw(st.sampled_from(SOURCES))
    lines = yaml.safe_dump(data, sort_keys=False).splitlines()
    leaves = _leaves(data)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(leaves))
        key = path[-1] if path else "x"
        value = draw(st.one_of(st.sampled_from(YAML_VALUES), nasty_text.map(repr)))
        op = draw(st.sampled_from(["set", "unknown", "duplicate", "drop"]))
        idx = next((i for i, ln in enumerate(lines) if ln.strip().startswith(f"{key}:")), 0)
        indent = lines[idx][: len(lines[idx]) - len(lines[idx].lstrip())] if lines else ""
        if op == "set" and lines:
            lines[idx] = f"{indent}{key}: {value}"
        elif op == "unknown":
            lines.insert(idx, f"{indent}{key}x: {value}")
        elif op == "duplicate" and lines:
            lines.insert(idx + 1, f"{indent}{key}: {value}")
        elif lines:
            del lines[idx]
    return draw(random_or_mutated("\n".join(lines).encode("utf-8"))), loader


@FUZZ
@given(recipe_text())
def test_recipes_load_or_name_the_key(case: tuple[bytes, Callable[[Path], object]]) -> None:
    content, loader = case
    config = read_written(loader, "recipe.yaml", content)
    if config is not None:  # what loads can be stored (checkpoints hold the config as JSON)
        config_to_json(config)
