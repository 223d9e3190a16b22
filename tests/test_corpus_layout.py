"""The corpus layout module: corpus.json reading and writing, versions, split lists."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from fairstream.data import layout
from fairstream.data.layout import CorpusVersionError
from fairstream.errors import CorpusError


def test_write_then_read_sets_format_and_version_first(tmp_path: Path) -> None:
    layout.write_corpus_json(tmp_path, {"version": 7, "format": "x", "seed": 1,
                                        "splits": ["train"]})
    text = (tmp_path / "corpus.json").read_text()
    assert list(json.loads(text)) == ["format", "version", "seed", "splits"]
    info = layout.read_corpus_json(tmp_path)
    assert (info["format"], info["version"], info["seed"]) == ("fairstream-corpus", 1, 1)


@pytest.mark.parametrize(("content", "message"), [
    (None, "corpus.json is missing"),
    ("{nope", "not valid JSON"),
    ('["a"]', "format=None"),
    ('{"format": "other"}', "format='other'"),
])
def test_read_names_what_is_wrong(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "corpus.json").write_text(content)
    with pytest.raises(CorpusError, match=message):
        layout.read_corpus_json(tmp_path)


def test_version_policy(tmp_path: Path) -> None:
    path = tmp_path / "corpus.json"
    assert layout.corpus_version({}, path) == 1  # written before the field was checked
    assert layout.corpus_version({"version": 1}, path) == 1
    newer = r"version 2 is not readable .*\(reads version 1\); .*newer"
    with pytest.raises(CorpusVersionError, match=newer) as err:
        layout.corpus_version({"version": 2}, path)
    assert (err.value.path, err.value.found, err.value.readable) == (path, 2, (1,))
    with pytest.raises(CorpusVersionError, match="'one'"):
        layout.corpus_version({"version": "one"}, path)


def test_split_lists() -> None:
    assert layout.corpus_splits({"splits": ["test", "audit"]}) == ["test", "audit"]
    # corpora written before "splits" existed: synthetic ones list counts, imported ones
    # config.splits (in import order); default splits come first as they did then
    assert layout.corpus_splits({"counts": {"train": {}, "dev": {}, "test": {}}}) == \
        ["train", "dev", "test"]
    assert layout.corpus_splits({"config": {"splits": {"test": {}, "mix": {}, "train": {}}}}) == \
        ["train", "test", "mix"]
    assert layout.corpus_splits({}) == []
    with pytest.raises(CorpusError, match="list of names"):
        layout.corpus_splits({"splits": "train"})
    with pytest.raises(CorpusError, match="'../x' is not valid"):
        layout.corpus_splits({"splits": ["train", "../x"]})


def test_manifest_paths_and_bytes(tmp_path: Path) -> None:
    cuts = layout.manifest_path(tmp_path, "audit", "cuts")
    assert cuts == tmp_path / "manifests" / "audit_cuts.jsonl.gz"
    with pytest.raises(CorpusError, match="unknown manifest kind 'features'"):
        layout.manifest_path(tmp_path, "train", "features")
    items = [{"id": "a", "text": "grüße"}, {"id": "b"}]
    path = layout.write_manifest(tmp_path, "train", "supervisions", items)
    first = path.read_bytes()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == items
    assert layout.write_manifest(tmp_path, "train", "supervisions", items).read_bytes() == first
    assert [p.name for p in (tmp_path / "manifests").iterdir()] == ["train_supervisions.jsonl.gz"]
