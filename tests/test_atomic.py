"""Atomic writes leave either the complete new file or the previous state, never a fragment."""

import os

import pytest

from brainfm.atomic import atomic_dir, atomic_open, write_json


def test_failed_write_keeps_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write('{"a": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert target.read_text().strip().startswith('{\n  "a": 1')
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_directory_swapped_in_only_when_complete(tmp_path):
    target = tmp_path / "store"
    with atomic_dir(target) as d:
        (d / "x").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as d:
            (d / "x").write_text("2")
            raise ValueError("boom")
    assert (target / "x").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_files_follow_the_umask_not_mkstemp_privacy(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    write_json(tmp_path / "m.json", {})
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask
