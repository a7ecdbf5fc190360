"""The bootstrap benchmark: a complete JSON report with ordered timings (speed itself is measured by `make bench`)."""

from __future__ import annotations

from bench_schema import MACHINE, NUMBER, check_schema, read_report

from brainfm.bench import stats

TIMING = {"n": int, "n_boot": int, "seconds_median": NUMBER, "seconds_min": NUMBER, "seconds_max": NUMBER,
          "repeats": int}
SCHEMA = {"benchmark": str, "machine": MACHINE,
          "results": {"paired_bootstrap_macro_auc": {**TIMING, "n_classes": int},
                      "paired_bootstrap_binary_auc": TIMING, "paired_bootstrap_cindex": TIMING,
                      "paired_bootstrap_mae": TIMING}}


def test_report_schema_and_ordered_timings(tmp_path):
    report = stats.run(tmp_path, n=120, n_boot=40, repeats=2)
    on_disk = read_report(tmp_path / "stats.json")
    check_schema(on_disk, SCHEMA)
    assert on_disk["results"] == report["results"]
    for r in on_disk["results"].values():
        assert r["repeats"] == 2 and 0 < r["seconds_min"] <= r["seconds_median"] <= r["seconds_max"]


def test_command_line_writes_into_the_output_directory(tmp_path, capsys):
    assert stats.main(["--out", str(tmp_path), "--n", "60", "--n-boot", "10", "--repeats", "1"]) == 0
    assert read_report(tmp_path / "stats.json")["results"]["paired_bootstrap_mae"]["n"] == 60
    assert "paired_bootstrap_macro_auc: median" in capsys.readouterr().out
