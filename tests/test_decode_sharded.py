"""`fairstream decode` under torchrun: shard assignment, parts, resume, merge."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
from _tiny_asr import tiny_trained_model
from click.testing import CliRunner

from fairstream.cli import main
from fairstream.errors import InputDataError
from fairstream.inference.sharding import (
    PartSpec,
    ShardError,
    assign_shards,
    failure_marks,
    heartbeat,
    merge_parts,
    order_skipped,
    part_path,
    part_problem,
    parts_dir,
    read_part,
    report_failure,
    shard_env,
    wait_for_parts,
    write_part,
)
from fairstream.results import read_results

# ---------------------------------------------------------------- pure functions


def test_shard_env_reads_torchrun_variables():
    assert shard_env({}) is None
    assert shard_env({"PATH": "/bin"}) is None
    env = shard_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank) == (3, 4, 1)
    with pytest.raises(InputDataError, match="WORLD_SIZE is not set"):
        shard_env({"RANK": "0"})
    with pytest.raises(InputDataError, match="RANK='x'"):
        shard_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(InputDataError, match="RANK=2 is not in"):
        shard_env({"RANK": "2", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("world", [1, 2, 3, 7, 40])
def test_every_cut_in_exactly_one_balanced_deterministic_shard(world):
    rng = random.Random(world)
    durations = {f"cut-{i:03d}": round(rng.uniform(0.5, 9.0), 2) for i in range(23)}
    shards = assign_shards(durations, world)
    assert len(shards) == world
    flat = [c for s in shards for c in s]
    assert sorted(flat) == sorted(durations)  # every cut, exactly once
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    totals = [sum(durations[c] for c in s) for s in shards]
    assert max(totals) - min(totals) <= max(durations.values()) + 1e-9
    assert all(s == sorted(s) for s in shards)
    shuffled = dict(rng.sample(sorted(durations.items()), len(durations)))
    assert assign_shards(shuffled, world) == shards  # the input order does not matter


def test_shards_are_dealt_longest_first():
    durations = {"a": 1.0, "b": 5.0, "c": 3.0, "d": 3.0, "e": 2.0}
    assert assign_shards(durations, 2) == [["a", "b", "d"], ["c", "e"]]  # b d a | c e
    with pytest.raises(InputDataError):
        assign_shards(durations, 0)


def _rows(ids):
    return pd.DataFrame({"utt_id": [f"u-{i}" for i in ids], "hyp": [f"h {i}" for i in ids],
                         "sub": list(range(len(ids)))})


def test_merge_puts_rows_in_cut_id_order():
    a, b = ["c1", "c4", "c5"], ["c0", "c2", "c3"]
    merged = merge_parts([(_rows(a), a), (_rows([]), []), (_rows(b), b)])
    assert merged["utt_id"].tolist() == [f"u-c{i}" for i in range(6)]
    assert merged.index.tolist() == list(range(6))
    with pytest.raises(ShardError, match="c1"):
        merge_parts([(_rows(a), a), (_rows(["c1"]), ["c1"])])
    assert len(merge_parts([(_rows([]), [])])) == 0


def test_skipped_cuts_in_single_process_order():
    skipped = [("b", "x"), ("nosup", "no transcript"), ("a", "y"), ("c", "z")]
    durations = {"a": 3.0, "b": 1.0, "c": 2.0, "nosup": 9.0}
    offline = order_skipped(skipped, durations, ["nosup"], streaming=False)
    assert [c for c, _ in offline] == ["nosup", "b", "c", "a"]
    streamed = order_skipped(skipped, durations, ["nosup"], streaming=True)
    assert [c for c, _ in streamed] == ["nosup", "a", "b", "c"]


def _spec(rank=1, world=2, ids=("c1", "c3"), fp="f1"):
    return PartSpec(rank, world, tuple(ids), fp)


def test_complete_parts_are_reused_and_stale_ones_named(tmp_path):
    out = tmp_path / "results.parquet"
    spec = _spec()
    path = part_path(out, spec)
    assert path == tmp_path / "results.parquet.parts" / "part-00001-of-00002.parquet"
    assert "is missing" in part_problem(path, spec)
    write_part(_rows(["c3"]), path, {"decode": {"x": 1}}, spec, ["c3"], [("c1", "bad audio")])
    assert part_problem(path, spec) is None
    rows, ids, skipped = read_part(path)
    assert ids == ["c3"] and skipped == [("c1", "bad audio")] and len(rows) == 1
    assert "another configuration" in part_problem(path, _spec(fp="f2"))
    assert "another set of cuts" in part_problem(path, _spec(ids=("c1", "c2")))
    assert "part 1 of 2, not 1 of 3" in part_problem(path, _spec(world=3))
    path.write_bytes(b"junk")
    assert "not a readable part" in part_problem(path, spec)
    with pytest.raises(ShardError, match="rows but"):
        write_part(_rows(["c3"]), path, {}, spec, [], [])


class _Clock:
    def __init__(self):
        self.now = 0.0
        self.on_sleep = None

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(self.now)


def test_wait_ends_when_every_part_is_complete(tmp_path):
    out = tmp_path / "r.parquet"
    specs = [_spec(0, 2, ["c0"]), _spec(1, 2, ["c1"])]
    write_part(_rows(["c0"]), part_path(out, specs[0]), {}, specs[0], ["c0"], [])
    clock = _Clock()

    def arrive(now):
        if now >= 3:  # rank 1 finishes after three seconds
            write_part(_rows(["c1"]), part_path(out, specs[1]), {}, specs[1], ["c1"], [])

    clock.on_sleep = arrive
    wait_for_parts(out, specs, timeout=10, clock=clock, sleep=clock.sleep)
    assert 3 <= clock.now < 4


def test_wait_gives_up_on_a_silent_rank_naming_its_part(tmp_path):
    out = tmp_path / "r.parquet"
    specs = [_spec(0, 2, ["c0"]), _spec(1, 2, ["c1"])]
    write_part(_rows(["c0"]), part_path(out, specs[0]), {}, specs[0], ["c0"], [])
    clock = _Clock()
    with pytest.raises(ShardError, match=r"part-00001-of-00002.parquet is missing.*rank 1 of 2 "
                                         r"has shown no sign of life for 30 s"):
        wait_for_parts(out, specs, timeout=30, clock=clock, sleep=clock.sleep)
    assert 30 < clock.now < 32
    # a rank that keeps touching its .alive file is waited for past the timeout
    alive = part_path(out, specs[1], ".alive")
    clock = _Clock()

    def beat(now):
        if now < 100:
            alive.touch()
            os.utime(alive, ns=(int(now * 1e9), int(now * 1e9)))
        elif now >= 120:
            write_part(_rows(["c1"]), part_path(out, specs[1]), {}, specs[1], ["c1"], [])

    clock.on_sleep = beat
    wait_for_parts(out, specs, timeout=30, clock=clock, sleep=clock.sleep)
    assert clock.now >= 120


def test_wait_stops_at_a_reported_failure_but_not_an_old_one(tmp_path):
    out = tmp_path / "r.parquet"
    specs = [_spec(0, 2, ["c0"]), _spec(1, 2, ["c1"])]
    write_part(_rows(["c0"]), part_path(out, specs[0]), {}, specs[0], ["c0"], [])
    failed = part_path(out, specs[1], ".failed")
    report_failure(failed, "CorpusError: cut c1: unreadable")
    old = failure_marks(specs, out)
    assert list(old) == [1]
    clock = _Clock()
    with pytest.raises(ShardError, match="no sign of life"):  # the old report is ignored
        wait_for_parts(out, specs, timeout=5, old_failures=old, clock=clock, sleep=clock.sleep)
    os.utime(failed, ns=(old[1] + 10**9, old[1] + 10**9))  # reported again, in this run
    with pytest.raises(ShardError, match=r"rank 1 failed, part .*part-00001-of-00002.parquet "
                                         r"is missing: CorpusError: cut c1: unreadable"):
        wait_for_parts(out, specs, timeout=5, old_failures=old, clock=clock, sleep=clock.sleep)


def test_heartbeat_file_lives_while_the_block_runs(tmp_path):
    alive = tmp_path / "parts" / "p.alive"
    with heartbeat(alive, every=0.01):
        assert alive.is_file()
    assert not alive.exists()


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def common(tiny_corpus, tmp_path_factory):
    """`decode` arguments for the tiny model on six test cuts (one with unreadable audio,
    skipped), and the table a plain single-process run of them writes."""
    from lhotse import CutSet

    from fairstream.data.corpus import load_corpus

    where = tmp_path_factory.mktemp("six")
    picked = sorted(load_corpus(tiny_corpus).cuts("test"), key=lambda c: c.id)
    dicts = [c.to_dict() for c in picked[:4] + picked[-3:]]
    (where / "garbage.flac").write_bytes(b"not audio")
    dicts[2]["recording"]["sources"][0]["source"] = str(where / "garbage.flac")
    CutSet.from_dicts(dicts).to_file(where / "cuts.jsonl.gz")
    args = ["decode", "--checkpoint", tiny_trained_model(tiny_corpus, tmp_path_factory)
            / "averaged.pt", "--cuts", where / "cuts.jsonl.gz", "--speakers",
            tiny_corpus / "speakers.csv", "--no-progress", "--by", "gender",
            "--on-error", "skip"]
    res = _invoke([*args, "--out", where / "single.parquet"])
    assert res.exit_code == 0, res.output
    assert "skipped 1 utterance(s)" in res.output
    return args, where / "single.parquet"


def _invoke(args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def _rank(rank, world=2):
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}


def _assert_same_table(a_path, b_path):
    a, meta_a = read_results(a_path)
    b, meta_b = read_results(b_path)
    pd.testing.assert_frame_equal(a, b)
    assert meta_a == meta_b
    assert pq.read_schema(a_path).metadata == pq.read_schema(b_path).metadata


def test_ranks_in_turn_merge_resume_and_redo_stale_parts(common, tmp_path):
    base, single = common
    out = tmp_path / "results.parquet"
    args = [*base, "--out", out, "--keep-parts",
            "--trn-dir", tmp_path / "trn"]
    one = _invoke(args, env=_rank(1))
    assert one.exit_code == 0, one.output
    assert "rank 1 of 2: wrote" in one.stderr and "WER" not in one.stdout
    assert not out.exists() and not (tmp_path / "trn").exists()  # rank 0 merges
    zero = _invoke(args, env=_rank(0))
    assert zero.exit_code == 0, zero.output
    assert "6 utterances" in zero.stdout and f"results: {out}" in zero.stdout
    assert "skipped 1 utterance(s)" in zero.stdout
    _assert_same_table(single, out)
    assert (tmp_path / "trn" / "hyp.trn").read_text().count("\n") == 6
    names = sorted(p.name for p in parts_dir(out).iterdir())
    assert names == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    _, ids0, _ = read_part(parts_dir(out) / names[0])
    _, ids1, _ = read_part(parts_dir(out) / names[1])
    from lhotse import CutSet

    _, config = read_results(single)
    skipped = [s["cut_id"] for s in config["decode"]["skipped"]]
    all_ids = sorted(c.id for c in CutSet.from_file(base[base.index("--cuts") + 1]))
    assert sorted(ids0 + ids1 + skipped) == all_ids and len(all_ids) == 7

    # resume: part 1 is missing and is decoded again; part 0 is reused
    (parts_dir(out) / names[1]).unlink()
    out.unlink()
    one = _invoke(args, env=_rank(1))
    assert "rank 1 of 2: wrote" in one.stderr
    zero = _invoke(args, env=_rank(0))
    assert zero.exit_code == 0, zero.output
    assert "rank 0 of 2: reusing the complete part" in zero.stderr
    _assert_same_table(single, out)

    # a part written with another search is decoded again, with the reason
    stale = _invoke([*args, "--max-symbols", "1"], env=_rank(1))
    assert stale.exit_code == 0, stale.output
    again = _invoke(args, env=_rank(1))
    assert "written with another configuration" in again.stderr
    assert "decoding its 3 cuts again" in again.stderr  # round-robin: 4 and 3 cuts
    # without --keep-parts the parts go once merged
    zero = _invoke([a for a in args if a != "--keep-parts"], env=_rank(0))
    assert zero.exit_code == 0, zero.output
    _assert_same_table(single, out)
    assert not parts_dir(out).exists()


def test_a_missing_rank_is_a_clear_error(common, tmp_path):
    base, _ = common
    out = tmp_path / "results.parquet"
    res = _invoke([*base, "--out", out, "--wait-timeout", "1"],
                  env=_rank(0, world=3))
    assert res.exit_code != 0
    assert "part-00001-of-00003.parquet is missing" in res.output
    assert "rank 1 of 3 has shown no sign of life for 1 s" in res.output
    assert not out.exists()
    bad = _invoke([*base, "--out", out],
                  env={"RANK": "0", "WORLD_SIZE": "two"})
    assert bad.exit_code != 0 and "WORLD_SIZE='two' is not an integer" in bad.output


def test_torchrun_two_processes_equal_a_single_process(common, tmp_path):
    base, single = common
    out = tmp_path / "results.parquet"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--standalone", "-m", "fairstream",
           *[str(a) for a in base], "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("6 utterances") == 1  # the summary comes from rank 0 only
    _assert_same_table(single, out)
    assert not parts_dir(out).exists()
