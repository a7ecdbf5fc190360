"""``brainfm bench --only demo`` on synthetic Snakemake benchmark files: the report's schema and arithmetic."""

from __future__ import annotations

import pytest
from bench_schema import NUMBER, check_schema, read_report

from brainfm.bench.demo import STEP_IMPORTS, analyse, logged_cores, read_benchmarks, run
from brainfm.errors import InputError

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
OPTIONAL_NUMBER = (int, float, type(None))
RULE_ROW = {"rule": str, "jobs": int, "wall_s": NUMBER, "cpu_s": OPTIONAL_NUMBER, "mean_job_s": NUMBER,
            "fixed_per_job_s": OPTIONAL_NUMBER, "fixed_s": OPTIONAL_NUMBER, "work_s": OPTIONAL_NUMBER,
            "fixed_share": OPTIONAL_NUMBER}
FIXED = {"process_s": NUMBER, "interpreter_s": NUMBER, "cli_import_s": NUMBER, "step_import_s": NUMBER,
         "model_build_s": NUMBER, "model_build_warm_s": NUMBER, "store_open_s": NUMBER, "fixed_s": NUMBER, "modules": [str], "heavy_modules": list}
REPORT = {"source": str, "rules": [RULE_ROW],
          "total": {"jobs": int, "job_wall_s": NUMBER, "job_cpu_s": OPTIONAL_NUMBER, "fixed_s": NUMBER,
                    "fixed_share": NUMBER},
          "fixed_costs": {"interpreter_s": NUMBER, "library_import_s": dict, "per_rule": {"union_dataset": FIXED},
                          "repeats": int},
          "jobs": [{"rule": str, "job": str, "wall_s": NUMBER, "cpu_s": OPTIONAL_NUMBER}]}


def _tsv(path, seconds, cpu):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:0{int(seconds) % 10}\t100.0\t200.0\t90.0\t95.0\t0.1\t0.2\t50.0\t{cpu}\n")


@pytest.fixture
def bench_dir(tmp_path):
    d = tmp_path / "benchmarks"
    _tsv(d / "union_dataset" / "a.tsv", 4.0, 1.5)
    _tsv(d / "union_dataset" / "b.tsv", 6.0, 2.5)
    _tsv(d / "fit_heads" / "brain_age" / "braindino.tsv", 20.0, 18.0)
    _tsv(d / "mystery_rule" / "x.tsv", 1.0, 0.5)  # a rule the bench does not know: reported, no fixed cost
    return d


def test_jobs_are_read_per_rule_from_the_folder_layout(bench_dir):
    jobs = read_benchmarks(bench_dir)
    assert sorted((j["rule"], j["job"]) for j in jobs) == [
        ("fit_heads", "brain_age/braindino"), ("mystery_rule", "x"), ("union_dataset", "a"), ("union_dataset", "b")]
    assert {j["job"]: (j["wall_s"], j["cpu_s"]) for j in jobs}["brain_age/braindino"] == (20.0, 18.0)


def test_fixed_share_is_jobs_times_fixed_cost_over_wall(bench_dir):
    fixed = {"per_rule": {"union_dataset": {"fixed_s": 1.5}, "fit_heads": {"fixed_s": 30.0}}}
    rep = analyse(read_benchmarks(bench_dir), fixed)
    rows = {r["rule"]: r for r in rep["rules"]}
    assert [r["rule"] for r in rep["rules"]] == ["fit_heads", "union_dataset", "mystery_rule"]  # slowest first
    u = rows["union_dataset"]
    assert (u["jobs"], u["wall_s"], u["cpu_s"], u["fixed_s"], u["work_s"]) == (2, 10.0, 4.0, 3.0, 7.0)
    assert u["fixed_share"] == pytest.approx(0.3)
    assert rows["fit_heads"]["fixed_s"] == 20.0 and rows["fit_heads"]["fixed_share"] == 1.0  # capped at the wall
    assert rows["mystery_rule"]["fixed_s"] is None
    assert rep["total"] == {"jobs": 4, "job_wall_s": 31.0, "job_cpu_s": 22.5, "fixed_s": 23.0,
                            "fixed_share": pytest.approx(23.0 / 31.0, abs=1e-4)}


@pytest.mark.parametrize("preloaded", [False, True])
def test_report_files_from_synthetic_benchmarks(bench_dir, tmp_path, preloaded):
    out = tmp_path / "bench"
    run(out, benchmarks=bench_dir, configfile=str(tmp_path / "no-config.yaml"), repeats=1, libraries=(),
        preloaded=preloaded)
    rep = read_report(out / "demo.json")
    check_schema(rep, REPORT)
    fixed = rep["fixed_costs"]
    probe = fixed["per_rule"]["union_dataset"]
    assert probe["modules"] == list(STEP_IMPORTS["union_dataset"]) and "pandas" in probe["heavy_modules"]
    assert probe["process_s"] >= probe["cli_import_s"] + probe["step_import_s"] and probe["model_build_s"] < 0.1
    md = (out / "demo.md").read_text()
    if preloaded:  # a job forked from the preloading process pays its start, model build and store open only
        assert fixed["preloaded"] and fixed["preloaded_step_start_s"] > 0
        assert probe["fixed_s"] == pytest.approx(fixed["preloaded_step_start_s"] + probe["model_build_warm_s"]
                                                 + probe["store_open_s"], abs=1e-3)
        assert "brainfm preload" in md
    else:
        assert probe["fixed_s"] == probe["process_s"] and fixed["preloaded_step_start_s"] is None
        assert "fresh processes: the fixed s/job" in md
    for rule in ("union_dataset", "fit_heads", "mystery_rule"):
        assert f"| {rule} |" in md


def test_cores_come_from_the_newest_snakemake_log_that_states_them(tmp_path):
    bench = tmp_path / "results" / "benchmarks"
    _tsv(bench / "fit_heads" / "a.tsv", 2.0, 1.0)
    assert logged_cores(bench) is None  # no Snakemake log anywhere above
    logs = tmp_path / ".snakemake" / "log"
    logs.mkdir(parents=True)
    (logs / "2026-12-02T065744.852788.snakemake.log").write_text("Using profile\nProvided cores: 2\nRules claiming\n")
    (logs / "2026-12-01T080000.000000.snakemake.log").write_text("Provided cores: 16\n")  # an older run
    (logs / "2026-12-02T070540.823417.snakemake.log").write_text("Building DAG of jobs...\nCreating report...\n")
    assert logged_cores(bench) == 2  # the --report run after it states no cores
    run(tmp_path / "out", benchmarks=bench, configfile=str(tmp_path / "no-config.yaml"), repeats=1, libraries=())
    assert read_report(tmp_path / "out" / "demo.json")["cores"] == 2
    assert "run with 2 cores" in (tmp_path / "out" / "demo.md").read_text()


def test_every_workflow_rule_has_a_benchmark_and_known_imports():
    import re
    from pathlib import Path

    rules_dir = Path(__file__).resolve().parents[2] / "workflow" / "rules"
    for smk in rules_dir.glob("*.smk"):
        for name, body in re.findall(r"(?ms)^rule (\w+):\n(.*?)(?=^rule |\Z)", smk.read_text()):
            if name == "user_weights":  # stops with instructions; nothing to time
                continue
            assert f'L.benchmark("{name}"' in body, f"{smk.name}: rule {name} has no benchmark under its own name"
            assert name in STEP_IMPORTS, f"rule {name}: add its subcommand's imports to STEP_IMPORTS"


def test_a_broken_benchmark_file_names_itself(tmp_path):
    bad = tmp_path / "b" / "rule" / "job.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("s\n")
    with pytest.raises(InputError) as err:
        read_benchmarks(tmp_path / "b")
    assert str(bad) in str(err.value)
