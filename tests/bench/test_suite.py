"""``brainfm bench --only``: the named benchmarks run and write their reports; unknown names are refused."""

from __future__ import annotations

import functools
import json

import pytest

from brainfm.bench.suite import ALL, run_benchmarks
from brainfm.cli import main


def test_every_benchmark_is_a_module_with_run():
    import importlib

    for name in ALL:
        assert callable(importlib.import_module(f"brainfm.bench.{name}").run)


def test_cli_only_runs_the_named_benchmark(tmp_path, capsys, monkeypatch):
    from brainfm.bench import stats

    monkeypatch.setattr(stats, "run", functools.partial(stats.run, n=80, n_boot=20, repeats=1))  # a small real run
    assert main(["bench", "--out", str(tmp_path), "--only", "stats"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]
    assert json.loads((tmp_path / "stats.json").read_text())["results"]["paired_bootstrap_mae"]["n"] == 80
    assert json.loads(capsys.readouterr().out) == {"stats": "see json"}


def test_unknown_benchmark_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_benchmarks(tmp_path, ["stats", "nonsense"])
