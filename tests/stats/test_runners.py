"""The statistics steps end to end: run folders in, the same tidy frames as the table functions, files out."""

import numpy as np
import pandas as pd
import pytest
from test_compare import BACKBONES, make_predictions

from brainfm.atomic import write_json, write_parquet
from brainfm.errors import InputError
from brainfm.stats.comparison import compare_predictions
from brainfm.stats.km import km_table
from brainfm.stats.knn import knn_table
from brainfm.stats.runners import finetune_table, km_stats, knn_stats, perturbation_stats, strata_stats, task_stats
from brainfm.stats.strata import age_strata_table
from brainfm.report.style import display_name, ratio_label
from brainfm.tasks.runs import collect_training_n, run_dir, untrained_cells

N_BOOT = 60


def write_runs(root, preds, extra=None):
    """One ``<root>/<backbone>/ratio~R/seed~S/predictions.parquet`` per run, as the fit step writes them."""
    dirs = []
    for backbone, frame in preds.groupby("backbone", sort=True):
        for (ratio, seed), run in frame.groupby(["ratio", "seed"]):
            out = run_dir(root / backbone, ratio, seed)
            write_parquet(out / "predictions.parquet", run.reset_index(drop=True))
            if extra is not None:
                write_parquet(out / "train_risk.parquet", extra[(extra.backbone == backbone) & (extra.ratio == ratio)
                                                                & (extra.seed == seed)].reset_index(drop=True))
        dirs.append(root / backbone)
    return dirs


def _paths(tmp_path, name):
    return tmp_path / "stats", tmp_path / "tables" / f"{name}.md", tmp_path / "figures" / f"{name}.png"


def _formats(table, figure):
    return all(table.with_suffix(s).is_file() for s in (".md", ".csv", ".tex")) and \
        all(figure.with_suffix(s).is_file() for s in (".png", ".pdf"))


def test_task_stats_writes_the_comparison_of_the_runs(tmp_path):
    preds = make_predictions("regression", seeds=(0, 1))
    dirs = write_runs(tmp_path / "runs", preds)
    out_dir, table, figure = _paths(tmp_path, "t_regression")
    out = task_stats("t_regression", dirs, out_dir, table, figure, reference="braindino",
                     description="brain age", n_boot=N_BOOT, seed=3, labels={"braindino": "BrainDINO"},
                     controls={"dinov3": "bmmae"})
    tidy = pd.read_parquet(out["comparison"])
    expected = compare_predictions(preds, "braindino", n_boot=N_BOOT, seed=3)
    pd.testing.assert_frame_equal(tidy, expected, check_like=True)
    controls = pd.read_parquet(out["controls"])
    assert set(zip(controls.reference, controls.backbone)) == {("dinov3", "bmmae")} and len(controls) == 2
    assert _formats(table, figure)
    md = table.read_text()
    assert "brain age" in md and "BrainDINO" in md


def _write_metrics(root, backbone, ratio, seed, folds):
    """The parts of a run's metrics.json the training-n table reads."""
    write_json(run_dir(root / backbone, ratio, seed) / "metrics.json",
               {"task": "t_regression", "backbone": backbone, "ratio": ratio, "seed": seed, "folds": folds})


def test_task_table_marks_the_cells_whose_heads_kept_their_first_epoch(tmp_path):
    """A head left at its first epoch by early stopping barely trained: its cell says so, the n table counts it."""
    preds = make_predictions("regression", seeds=(0, 1))
    dirs = write_runs(tmp_path / "runs", preds)
    untrained = ("bmmae", 0.1)
    for d in dirs:
        for ratio in (0.1, 1.0):
            for seed in (0, 1):
                stuck = (d.name, ratio) == untrained
                # elsewhere one head in three stops at epoch 1: below the mark's half
                _write_metrics(d.parent, d.name, ratio, seed, [{"best_epoch": 1 if stuck or k == 0 else 7,
                                                          "epochs_run": 11 if stuck or k == 0 else 17}
                                                         for k in range(3)])
    out_dir, table, figure = _paths(tmp_path, "t_regression")
    out = task_stats("t_regression", dirs, out_dir, table, figure, reference="braindino", n_boot=N_BOOT)
    wide = pd.read_csv(table.with_suffix(".csv"))
    cells = [(row["Backbone"], col) for _, row in wide.iterrows() for col in wide.columns if "‡" in str(row[col])]
    assert cells == [(display_name("bmmae"), ratio_label(0.1))]
    assert "‡: at least 50% of this cell's heads" in table.read_text()
    n = pd.read_parquet(out["training_n"]).set_index(["backbone", "ratio", "seed"])
    assert n.loc[("bmmae", 0.1, 0), "first_epoch_share"] == 1.0 and n.loc[("bmmae", 0.1, 0), "best_epoch"] == 1
    assert n.loc[("dinov3", 1.0, 1), "first_epoch_share"] == pytest.approx(1 / 3)
    assert n.loc[("dinov3", 1.0, 1), "best_epoch"] == 7
    assert "first_epoch_share" in out["training_n_table"].read_text()


def test_no_cell_is_marked_when_the_heads_trained_past_their_first_epoch(tmp_path):
    preds = make_predictions("regression")
    dirs = write_runs(tmp_path / "runs", preds)
    for d in dirs:
        for ratio in (0.1, 1.0):
            _write_metrics(d.parent, d.name, ratio, 0, [{"best_epoch": 4, "epochs_run": 14}])
    out_dir, table, figure = _paths(tmp_path, "t_regression")
    task_stats("t_regression", dirs, out_dir, table, figure, reference="braindino", n_boot=N_BOOT)
    assert "‡" not in table.read_text()


def test_training_n_says_nothing_of_epochs_for_a_closed_form_predictor(tmp_path):
    """The prior reference runs no epochs (best_epoch 0 of 0): neither counted as stuck nor as trained."""
    _write_metrics(tmp_path, "prior", 1.0, 0, [{"best_epoch": 0, "epochs_run": 0}])
    _write_metrics(tmp_path, "old_run", 1.0, 0, [{"n_train": 30}])  # written before epochs were recorded
    n = collect_training_n([tmp_path / "prior", tmp_path / "old_run"])
    assert len(n) == 2 and n["best_epoch"].isna().all() and n["first_epoch_share"].isna().all()
    assert untrained_cells(n) == set()


def test_a_one_epoch_budget_is_not_a_stuck_head(tmp_path):
    _write_metrics(tmp_path, "vit", 1.0, 0, [{"best_epoch": 1, "epochs_run": 1}, {"best_epoch": 1, "epochs_run": 6}])
    n = collect_training_n([tmp_path / "vit"]).iloc[0]
    assert n["best_epoch"] == 1 and n["first_epoch_share"] == 0.5


def test_a_damaged_metrics_file_is_named(tmp_path):
    _write_metrics(tmp_path, "vit", 1.0, 0, [{"best_epoch": 1, "epochs_run": 6}])
    (path,) = (tmp_path / "vit").rglob("metrics.json")
    path.write_text(path.read_text()[:20])  # a run cut off while someone copied it
    with pytest.raises(InputError) as err:
        collect_training_n([tmp_path / "vit"])
    assert err.value.path == str(path) and err.value.reason.startswith("cannot read a run's metrics (JSONDecodeError")


def test_strata_stats_needs_the_task_edges(tmp_path):
    preds = make_predictions("regression", ratios=(1.0,), n=80)
    dirs = write_runs(tmp_path / "runs", preds)
    out_dir, table, figure = _paths(tmp_path, "t_strata")
    with pytest.raises(InputError, match="t_regression.*strata"):
        strata_stats("t_regression", dirs, out_dir, table, figure, edges=None, reference="braindino")
    edges = [50, 65, 80, np.inf]
    path = strata_stats("t_regression", dirs, out_dir, table, figure, edges=edges, reference="braindino",
                        n_boot=N_BOOT, seed=1)
    expected = age_strata_table(preds, edges, "braindino", n_boot=N_BOOT, seed=1)
    pd.testing.assert_frame_equal(pd.read_parquet(path), expected, check_like=True)
    assert set(pd.read_parquet(path)["stratum"]) == {"50–64", "65–79", "80+"} and _formats(table, figure)


def test_km_stats_splits_at_the_training_risks_the_runs_wrote(tmp_path):
    preds = make_predictions("survival", ratios=(1.0,))
    rng = np.random.default_rng(1)
    train = pd.DataFrame([dict(task="t_survival", backbone=b, ratio=1.0, seed=0, fold=0, risk=r)
                          for b in BACKBONES for r in rng.normal(-6, 1, 50)])
    dirs = write_runs(tmp_path / "runs", preds, extra=train)
    out_dir, table, figure = _paths(tmp_path, "t_km")
    path = km_stats("t_survival", dirs, out_dir, table, figure, reference="braindino")
    stats = pd.read_parquet(path)
    expected, _ = km_table(preds, train)
    pd.testing.assert_frame_equal(stats, expected, check_like=True)
    assert (stats.threshold_source == "train").all() and _formats(table, figure)


def test_knn_stats_reads_every_backbone_file_and_names_a_bad_one(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    files = []
    for b, acc in (("braindino", 0.8), ("dinov3", 0.6)):
        frame = pd.concat([pd.DataFrame({"task": "knn_t", "backbone": b, "subject": [f"s{i}" for i in range(60)],
                                         "session": "0", "y_true": y, "k": k, "y_pred": y,
                                         "correct": (rng.random(60) < acc).astype(int)}) for k in (1, 5)])
        files.append(tmp_path / f"{b}.parquet")
        write_parquet(files[-1], frame)
    out_dir, table, figure = _paths(tmp_path, "knn_t")
    out = knn_stats("knn_t", files, out_dir, table, figure, reference="braindino", n_boot=N_BOOT, seed=2)
    expected = knn_table(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True), "braindino",
                         n_boot=N_BOOT, seed=2)
    pd.testing.assert_frame_equal(pd.read_parquet(out["knn"]), expected)
    assert _formats(table, figure)
    bad = tmp_path / "junk.parquet"
    bad.write_text("not parquet")
    with pytest.raises(InputError, match="junk.parquet"):
        knn_stats("knn_t", [files[0], bad], out_dir, table, figure, reference="braindino", n_boot=N_BOOT)


def test_finetune_table_compares_only_the_runs_both_modes_have(tmp_path):
    preds = make_predictions("classification", ratios=(0.1, 1.0), k=2)
    frozen = write_runs(tmp_path / "frozen", preds[preds.backbone == "braindino"])[0]
    tuned_preds = preds[(preds.backbone == "dinov3") & (preds.ratio == 1.0)]
    tuned = write_runs(tmp_path / "tuned", tuned_preds)[0]
    table = tmp_path / "finetune.md"
    tidy = finetune_table([(frozen, tuned)], table, backbone="braindino", n_boot=N_BOOT,
                          labels={"braindino": "BrainDINO"})
    assert set(tidy.ratio) == {1.0} and set(tidy.backbone) == {"BrainDINO (frozen)", "BrainDINO (fine-tuned)"}
    assert tidy.loc[~tidy.is_reference, "test"].item() == "paired bootstrap"
    pd.testing.assert_frame_equal(pd.read_parquet(table.with_suffix(".parquet")), tidy)
    empty = write_runs(tmp_path / "tuned_other", tuned_preds.assign(seed=7))[0]
    with pytest.raises(InputError, match="no frozen run matches"):
        finetune_table([(frozen, empty)], table, backbone="braindino", n_boot=N_BOOT)


def test_perturbation_stats_tabulates_each_severity(tmp_path):
    rows = [dict(task="t", backbone=b, metric="auc", perturbation=p, severity=s, value=v, err=0.01)
            for b in ("braindino", "dinov3") for p, sev in (("gamma", (0.5, 1.0, 2.0)), ("noise", (0.0, 0.1)))
            for s, v in zip(sev, (0.8, 0.75, 0.7))]
    files = [tmp_path / "a.parquet"]
    write_parquet(files[0], pd.DataFrame(rows))
    table, figure = tmp_path / "perturbations.md", tmp_path / "perturbations.png"
    perturbation_stats(files, table, figure, reference="braindino", labels={"dinov3": "DINOv3"})
    wide = pd.read_csv(table.with_suffix(".csv"))
    assert {"gamma 0.5", "gamma 1", "gamma 2", "noise 0", "noise 0.1"} <= set(wide.columns)
    assert set(wide["backbone"]) == {"BrainDINO", "DINOv3"} and _formats(table, figure)


def test_sequence_task_statistics_report_accuracy_beside_macro_auc(tmp_path):
    from brainfm.stats.runners import task_metrics

    preds = make_predictions("classification", k=4, ratios=(1.0,)).assign(task="sequence")
    dirs = write_runs(tmp_path / "runs", preds)
    out_dir, table, figure = _paths(tmp_path, "sequence")
    metrics = task_metrics("classification", "modality")
    assert metrics == ["macro_auc", "accuracy"] and task_metrics("classification", "diagnosis") is None
    out = task_stats("sequence", dirs, out_dir, table, figure, reference="braindino", n_boot=N_BOOT, metrics=metrics)
    tidy = pd.read_parquet(out["comparison"])
    acc = tidy[(tidy.metric == "accuracy") & (tidy.backbone == "dinov3")].iloc[0]
    run = preds[preds.backbone == "dinov3"]
    assert acc.estimate == pytest.approx((run.y_pred == run.y_true).mean())
    assert acc.test == "paired bootstrap" and 0 <= acc.p_value <= 1
    assert "Accuracy" in table.read_text() or "accuracy" in table.read_text()
