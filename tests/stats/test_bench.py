"""The bootstrap benchmark writes a complete JSON report."""

import json

from brainfm.stats import bench


def test_bench_writes_json_with_timings_and_machine(tmp_path):
    out = tmp_path / "bench" / "stats.json"
    report = bench.run(out, n=120, n_boot=40, repeats=2)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(report))
    macro = on_disk["results"]["paired_bootstrap_macro_auc"]
    assert macro["n"] == 120 and macro["n_boot"] == 40 and macro["n_classes"] == 3 and macro["repeats"] == 2
    for case in ("paired_bootstrap_binary_auc", "paired_bootstrap_cindex", "paired_bootstrap_mae"):
        r = on_disk["results"][case]
        assert 0 < r["seconds_min"] <= r["seconds_median"] <= r["seconds_max"]
    assert on_disk["machine"]["cpu_count"] >= 1


def test_bench_command_line_writes_into_the_output_directory(tmp_path, capsys):
    assert bench.main(["--out", str(tmp_path), "--n", "60", "--n-boot", "10", "--repeats", "1"]) == 0
    assert json.loads((tmp_path / "stats.json").read_text())["results"]["paired_bootstrap_mae"]["n"] == 60
    assert "paired_bootstrap_macro_auc: median" in capsys.readouterr().out
