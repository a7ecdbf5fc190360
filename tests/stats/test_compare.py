"""Comparison tables from prediction frames agree with the underlying tests run by hand."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from brainfm.stats import StatsInputError, auc, bootstrap_ci, holm, mcnemar_exact, paired_bootstrap, sign_flip_test
from brainfm.atomic import write_parquet
from brainfm.errors import InputError
from brainfm.stats.comparison import compare_dice, compare_predictions
from brainfm.stats.hypothesis import stars
from brainfm.stats.km import km_table
from brainfm.stats.knn import knn_table
from brainfm.stats.predictions import read_predictions
from brainfm.stats.strata import age_bin_labels, age_strata_table

BACKBONES = ("braindino", "dinov3", "bmmae")


def make_predictions(kind="classification", *, seeds=(0,), folds=(0,), n=60, k=3, sessions=1, ratios=(0.1, 1.0),
                     seed=0):
    """predictions.parquet-like rows; backbones get progressively worse."""
    rng = np.random.default_rng(seed)
    subjects = [f"sub-{i:03d}" for i in range(n)]
    truth = {s: dict(y=int(rng.integers(0, k)), age=float(rng.uniform(50, 95)), t=float(rng.normal(50, 15)),
                     time=float(rng.exponential(400)), event=int(rng.integers(0, 2)), fold=folds[i % len(folds)])
             for i, s in enumerate(subjects)}
    rows = []
    for b_i, b in enumerate(BACKBONES):
        for ratio in ratios:
            for sd in seeds:
                for s in subjects:
                    tr = truth[s]
                    for ses in range(sessions):
                        row = dict(task=f"t_{kind}", backbone=b, ratio=ratio, seed=sd, fold=tr["fold"], subject=s,
                                   session=f"ses-{ses}", kind=kind, age=tr["age"])
                        if kind == "classification":
                            logit = rng.normal(size=k) + (1.5 - 0.5 * b_i) * np.eye(k)[tr["y"]]
                            p = np.exp(logit) / np.exp(logit).sum()
                            row.update(y_true=float(tr["y"]), y_pred=float(p.argmax()),
                                       **{f"prob_{j}": p[j] for j in range(k)})
                        elif kind == "regression":
                            row.update(y_true=tr["t"], y_pred=tr["t"] + rng.normal(0, 3 + 2 * b_i))
                        else:
                            row.update(y_true=tr["time"], time=tr["time"], event=tr["event"],
                                       y_pred=-np.log(tr["time"]) * (1.5 - 0.5 * b_i) + rng.normal())
                        rows.append(row)
    return pd.DataFrame(rows)


def _run(df, backbone, ratio, seed=0):
    r = df[(df.backbone == backbone) & (df.ratio == ratio) & (df.seed == seed)]
    return r.sort_values(["fold", "subject", "session"])


def _row(out, backbone, ratio=1.0, metric=None):
    sel = (out.backbone == backbone) & (out.ratio == ratio)
    if metric:
        sel &= out.metric == metric
    assert sel.sum() == 1
    return out[sel].iloc[0]


def test_classification_rows_equal_direct_bootstrap_calls():
    df = make_predictions("classification")
    out = compare_predictions(df, n_boot=300, seed=11)
    assert set(out.metric) == {"macro_auc"} and len(out) == 6
    ref, other = _run(df, "braindino", 1.0), _run(df, "dinov3", 1.0)
    probs = [f"prob_{j}" for j in range(3)]
    y = ref.y_true.to_numpy()
    row = _row(out, "dinov3")
    assert row.estimate == pytest.approx(roc_auc_score(y, other[probs].to_numpy(), multi_class="ovr"))
    direct = paired_bootstrap(y, other[probs].to_numpy(), ref[probs].to_numpy(), "macro_auc", n_boot=300, seed=11)
    assert row.delta == pytest.approx(direct.delta)
    assert (row.delta_ci_low, row.delta_ci_high) == pytest.approx(direct.ci)
    assert row.p_value == direct.p_value
    ci = bootstrap_ci(y, other[probs].to_numpy(), "macro_auc", n_boot=300, seed=11)
    assert (row.ci_low, row.ci_high, row.sd) == pytest.approx((ci.low, ci.high, ci.sd))
    assert row.test == "paired bootstrap" and row.stars == stars(row.p_value)
    refrow = _row(out, "braindino")
    assert refrow.is_reference and np.isnan(refrow.p_value) and refrow.test == ""
    assert out.groupby(["ratio"]).head(1).backbone.eq("braindino").all()  # reference listed first


def test_seeds_are_averaged_per_seed_metric():
    df = make_predictions("classification", k=2, seeds=(0, 1, 2))
    out = compare_predictions(df, n_boot=100)
    per_seed = [auc(_run(df, "bmmae", 0.1, s).y_true, _run(df, "bmmae", 0.1, s).prob_1) for s in (0, 1, 2)]
    row = _row(out, "bmmae", 0.1, "auc")
    assert row.n_seeds == 3
    assert row.estimate == pytest.approx(np.mean(per_seed))
    assert row.seed_sd == pytest.approx(np.std(per_seed, ddof=1))
    assert row.ci_low <= row.estimate <= row.ci_high


def test_regression_uses_paired_ttest_on_per_subject_errors():
    df = make_predictions("regression", sessions=2)
    out = compare_predictions(df, n_boot=200)
    ref, other = _run(df, "braindino", 1.0), _run(df, "bmmae", 1.0)
    ea = np.abs(other.y_pred - other.y_true).groupby(other.subject.to_numpy()).mean()
    eb = np.abs(ref.y_pred - ref.y_true).groupby(ref.subject.to_numpy()).mean()
    row = _row(out, "bmmae")
    assert row.metric == "mae" and row.test.startswith("paired t-test")
    assert row.p_value == pytest.approx(sps.ttest_rel(ea, eb).pvalue)
    assert row.estimate == pytest.approx(np.mean(np.abs(other.y_pred - other.y_true)))
    assert row.sd_source == "bootstrap" and row.sd > 0
    assert row.n == 120 and row.n_subjects == 60


def test_cv_tasks_use_fold_means_t_interval_and_fold_ttest():
    df = make_predictions("classification", folds=(0, 1, 2, 3, 4), n=100)
    out = compare_predictions(df, n_boot=50)
    probs = [f"prob_{j}" for j in range(3)]

    def per_fold(b):
        r = _run(df, b, 1.0)
        return np.array([auc(g.y_true, g[probs].to_numpy()) for _, g in r.groupby("fold")])

    a, ref = per_fold("dinov3"), per_fold("braindino")
    row = _row(out, "dinov3")
    assert row.n_folds == 5 and row.sd_source == "folds"
    assert row.estimate == pytest.approx(a.mean())
    lo, hi = sps.t.interval(0.95, 4, loc=a.mean(), scale=sps.sem(a))
    assert (row.ci_low, row.ci_high) == pytest.approx((lo, hi))
    assert row.p_value == pytest.approx(sps.ttest_rel(a, ref).pvalue)


def test_survival_cindex_and_holm_option():
    df = make_predictions("survival")
    out = compare_predictions(df, n_boot=200, adjust="holm")
    assert set(out.metric) == {"cindex"}
    for _, grp in out.groupby("ratio"):
        others = grp[~grp.is_reference]
        np.testing.assert_allclose(others.p_adjusted, holm(others.p_value.to_numpy()))


def test_misaligned_runs_and_missing_reference_are_errors():
    df = make_predictions("classification", n=30)
    broken = df.drop(df[(df.backbone == "bmmae") & (df.subject == "sub-003")].index)
    with pytest.raises(StatsInputError, match="different items"):
        compare_predictions(broken, n_boot=10)
    with pytest.raises(StatsInputError, match="reference backbone 'nope'"):
        compare_predictions(df, reference="nope", n_boot=10)
    dup = pd.concat([df, df[df.subject == "sub-001"]])
    with pytest.raises(StatsInputError, match="duplicated test item"):
        compare_predictions(dup, n_boot=10)
    relabel = df.copy()
    relabel.loc[(relabel.backbone == "dinov3") & (relabel.subject == "sub-002"), "y_true"] += 1
    with pytest.raises(StatsInputError, match="different y_true"):
        compare_predictions(relabel, n_boot=10)


def test_knn_table_mcnemar_and_holm_across_k():
    rng = np.random.default_rng(0)
    rows = []
    y = rng.integers(0, 2, 80)
    for b, acc in (("braindino", 0.8), ("dinov3", 0.65)):
        for k in (1, 5, 20):
            correct = rng.random(80) < acc
            rows += [dict(backbone=b, subject=f"s{i}", y_true=y[i], k=k, y_pred=y[i] if c else 1 - y[i],
                          correct=int(c)) for i, c in enumerate(correct)]
    knn = pd.DataFrame(rows)
    out = knn_table(knn, n_boot=200)
    other = out[out.backbone == "dinov3"].sort_values("k")
    raw = []
    for k in (1, 5, 20):
        a = knn[(knn.backbone == "dinov3") & (knn.k == k)].sort_values("subject").correct.to_numpy()
        r = knn[(knn.backbone == "braindino") & (knn.k == k)].sort_values("subject").correct.to_numpy()
        raw.append(mcnemar_exact(a, r).p_value)
        assert other[other.k == k].accuracy.iloc[0] == pytest.approx(a.mean())
    np.testing.assert_allclose(other.p_value, raw)
    np.testing.assert_allclose(other.p_holm, multipletests(raw, method="holm")[1])
    assert (out.ci_low <= out.accuracy).all() and (out.accuracy <= out.ci_high).all()


def test_age_bin_labels():
    assert age_bin_labels([55, 65, 75, 85, np.inf]) == ["55–64", "65–74", "75–84", "85+"]
    assert age_bin_labels([0, 10, 30, 50, 70, np.inf]) == ["0–9", "10–29", "30–49", "50–69", "70+"]


def test_age_strata_regression_sign_flip_with_holm_within_stratum():
    df = make_predictions("regression", n=80, ratios=(1.0,))
    out = age_strata_table(df, edges=(50, 65, 80, np.inf), n_boot=100, n_perm=2000)
    assert list(out.stratum.unique()) == ["50–64", "65–79", "80+"]
    s = out[out.stratum == "65–79"]
    ref, other = _run(df, "braindino", 1.0), _run(df, "dinov3", 1.0)
    in_bin = (ref.age >= 65).to_numpy() & (ref.age < 80).to_numpy()
    d = (np.abs(other.y_pred - other.y_true).to_numpy() - np.abs(ref.y_pred - ref.y_true).to_numpy())[in_bin]
    row = s[s.backbone == "dinov3"].iloc[0]
    assert row.n == in_bin.sum()
    assert row.p_value == pytest.approx(sign_flip_test(d, n_perm=2000, seed=42).p_value)
    others = s[~s.is_reference]
    np.testing.assert_allclose(others.p_holm, holm(others.p_value.to_numpy()))


def test_age_strata_classification_single_class_stratum_is_flagged():
    df = make_predictions("classification", n=60, ratios=(1.0,))
    df.loc[df.age >= 90, "y_true"] = 0.0  # one class only in the oldest bin
    out = age_strata_table(df, edges=(50, 70, 90, np.inf), n_boot=50)
    old = out[out.stratum == "90+"]
    assert old.estimate.isna().all() and old.note.str.contains("single class").all()
    young = out[out.stratum == "50–69"]
    assert young.estimate.notna().all() and young[~young.is_reference].p_value.notna().all()


def test_km_table_thresholds_from_training_risks():
    df = make_predictions("survival", ratios=(1.0,))
    train = pd.DataFrame([dict(task="t_survival", backbone=b, ratio=1.0, seed=0, risk=r)
                          for b in BACKBONES for r in np.random.default_rng(1).normal(-6, 1, 50)])
    stats_, curves = km_table(df, train)
    row = stats_[stats_.backbone == "braindino"].iloc[0]
    thr = np.median(train[train.backbone == "braindino"].risk)
    assert row.threshold == pytest.approx(thr) and row.threshold_source == "train"
    run = _run(df, "braindino", 1.0)
    assert row.n_high == (run.y_pred > thr).sum()
    assert set(curves.group) <= {"low", "high"} and set(curves.backbone) == set(BACKBONES)
    stats2, _ = km_table(df)
    assert stats2.threshold_source.str.startswith("test").all()
    with pytest.raises(StatsInputError, match="no training risks"):
        km_table(df, train[train.backbone != "bmmae"])


def test_compare_dice_matches_direct_paired_bootstrap():
    rng = np.random.default_rng(2)
    rows = []
    for b, mu in (("braindino", 0.85), ("dinov3", 0.8)):
        for region in ("WT", "ET"):
            for i in range(40):
                rows.append(dict(task="brats21", backbone=b, ratio=1.0, seed=0, subject=f"s{i:02d}", region=region,
                                 dice=float(np.clip(rng.normal(mu, 0.05), 0, 1))))
    frame = pd.DataFrame(rows)
    out = compare_dice(frame, n_boot=200)
    assert set(out.metric) == {"dice_WT", "dice_ET"}
    wt = frame[frame.region == "WT"].sort_values("subject")
    a = wt[wt.backbone == "dinov3"].dice.to_numpy()
    r = wt[wt.backbone == "braindino"].dice.to_numpy()
    row = out[(out.metric == "dice_WT") & (out.backbone == "dinov3")].iloc[0]
    direct = paired_bootstrap(None, a, r, "dice", n_boot=200, seed=42)
    assert row.estimate == pytest.approx(a.mean()) and row.p_value == direct.p_value
    assert row.delta == pytest.approx(direct.delta) and row.higher_is_better


def test_read_predictions_concatenates_and_names_bad_files(tmp_path):
    df = make_predictions("regression", n=10, ratios=(1.0,))
    paths = []
    for b, run in df.groupby("backbone"):
        paths.append(tmp_path / b / "predictions.parquet")
        write_parquet(paths[-1], run)
    back = read_predictions(paths)
    assert len(back) == len(df) and set(back.backbone) == set(BACKBONES)
    bad = tmp_path / "bad.parquet"
    write_parquet(bad, df.drop(columns=["fold"]))
    with pytest.raises(InputError, match="bad.parquet.*fold"):
        read_predictions([paths[0], bad])
    with pytest.raises(InputError, match="does not exist"):
        read_predictions([tmp_path / "missing.parquet"])
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(InputError, match="junk.parquet: cannot read"):
        read_predictions([junk])


def test_nan_predictions_are_reported_with_their_run():
    df = make_predictions("regression", n=20, ratios=(1.0,))
    df.loc[(df.backbone == "dinov3") & (df.subject == "sub-004"), "y_pred"] = np.nan
    with pytest.raises(StatsInputError, match="backbone dinov3.*NaN"):
        compare_predictions(df, n_boot=10)


def test_controls_are_compared_pairwise_with_the_pretrained_backbone_as_reference():
    """Each pair's rows equal a two-backbone comparison run on its own; the third backbone plays no part."""
    from brainfm.stats.comparison import compare_controls

    preds = make_predictions("regression", seeds=(0, 1), n=40)
    out = compare_controls(preds, {"dinov3": "bmmae", "braindino": "bmmae", "absent": "bmmae"}, n_boot=50)
    assert sorted(zip(out.reference, out.backbone)) == sorted([("dinov3", "bmmae"), ("braindino", "bmmae")] * 2)
    alone = compare_predictions(preds[preds.backbone.isin(["dinov3", "bmmae"])], "dinov3", n_boot=50)
    mine = out[out.reference == "dinov3"].reset_index(drop=True)
    expect = alone[alone.backbone == "bmmae"].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, expect)
    # delta = control - pretrained, each the mean over seeds of the per-seed MAE (computed here directly)
    mae = {b: np.mean([np.mean(np.abs(r.y_pred - r.y_true)) for r in (_run(preds, b, 1.0, s) for s in (0, 1))])
           for b in ("bmmae", "dinov3")}
    assert mine.loc[mine.ratio == 1.0, "delta"].iloc[0] == pytest.approx(mae["bmmae"] - mae["dinov3"])
    assert compare_controls(preds, {"x": "y"}, n_boot=10).empty
