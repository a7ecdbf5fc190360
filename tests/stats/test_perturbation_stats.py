"""Supp. Table 18: tests against the reference at each perturbation severity, checked by hand."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from brainfm.atomic import write_parquet
from brainfm.stats.hypothesis import stars
from brainfm.stats.perturbation import perturbation_comparison
from brainfm.stats.runners import perturbation_stats

SETTINGS = (("gamma", 1.0), ("gamma", 2.0))


def _items(kind, *, n=40, visits=1, seed=0):
    """Pooled per-item predictions as evaluate_perturbed writes them; dinov3 worse, more so at gamma 2."""
    rng = np.random.default_rng(seed)
    rows = []
    subjects = [f"sub-{i:03d}" for i in range(n)]
    y = {s: int(i % 2) for i, s in enumerate(subjects)}
    t = {s: float(rng.uniform(20, 80)) for s in subjects}
    for pert, sev in SETTINGS:
        for b, noise in (("braindino", 1.0), ("dinov3", 1.6 if sev == 1.0 else 3.0)):
            for s in subjects:
                for v in range(visits):
                    row = dict(task=f"t_{kind}", backbone=b, ratio=1.0, seed=0, fold=0, subject=s,
                               session=f"ses-{v}", kind=kind, perturbation=pert, severity=sev)
                    if kind == "classification":
                        p1 = 1 / (1 + np.exp(-(2 * y[s] - 1) * 1.5 / noise + rng.normal()))
                        row.update(y_true=float(y[s]), prob_0=1 - p1, prob_1=p1, y_pred=float(p1 > 0.5))
                    else:
                        row.update(y_true=t[s], y_pred=t[s] + rng.normal(0, 3 * noise))
                    rows.append(row)
    return pd.DataFrame(rows)


def test_mae_p_values_equal_scipy_paired_t_on_per_subject_errors():
    df = _items("regression", visits=3)
    out = perturbation_comparison(df, "braindino", n_boot=50, seed=1)
    assert len(out) == 4 and set(out.test.dropna()) >= {"paired t-test (per-subject errors)"}
    for sev in (1.0, 2.0):
        sel = df[df.severity == sev].sort_values(["subject", "session"])
        err = {b: (g.y_pred - g.y_true).abs().groupby(g.subject).mean() for b, g in sel.groupby("backbone")}
        ref = sps.ttest_rel(err["dinov3"], err["braindino"])
        row = out[(out.severity == sev) & (out.backbone == "dinov3")].iloc[0]
        assert row.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert row.stars == stars(ref.pvalue)
        assert row.n_subjects == 40 and row.n == 120


def _independent_paired_bootstrap_p(y, a, b, subjects, n_boot, seed):
    """A plain loop: resample subjects with replacement, AUC(a) - AUC(b) on all their rows."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(subjects)
    rows_of = {s: np.flatnonzero(subjects == s) for s in uniq}
    d = []
    for _ in range(n_boot):
        rows = np.concatenate([rows_of[s] for s in rng.choice(uniq, len(uniq))])
        if len(np.unique(y[rows])) < 2:
            continue
        d.append(roc_auc_score(y[rows], a[rows]) - roc_auc_score(y[rows], b[rows]))
    d = np.asarray(d)
    return min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))


def test_auc_p_values_agree_with_an_independent_subject_bootstrap():
    df = _items("classification", n=60, visits=2, seed=3)
    n_boot = 800
    out = perturbation_comparison(df, "braindino", n_boot=n_boot, seed=5)
    for sev in (1.0, 2.0):
        sel = df[df.severity == sev]
        a = sel[sel.backbone == "dinov3"].sort_values(["subject", "session"])
        b = sel[sel.backbone == "braindino"].sort_values(["subject", "session"])
        row = out[(out.severity == sev) & (out.backbone == "dinov3")].iloc[0]
        assert row.test == "paired bootstrap"
        assert row.estimate == pytest.approx(roc_auc_score(a.y_true, a.prob_1))
        p_ref = _independent_paired_bootstrap_p(a.y_true.to_numpy(), a.prob_1.to_numpy(), b.prob_1.to_numpy(),
                                                a.subject.to_numpy(), n_boot, 11)
        # two Monte Carlo estimates of the same p: within a few binomial standard errors
        se = np.sqrt(max(p_ref, 0.01) * (1 - min(p_ref, 0.99)) / n_boot) * 2
        assert abs(row.p_value - p_ref) < max(4 * se, 0.02)
    # the severe setting separates the backbones more
    p = out[out.backbone == "dinov3"].set_index("severity").p_value
    assert p[2.0] <= p[1.0]


def test_perturbation_stats_table_carries_the_marks(tmp_path):
    df = _items("regression", n=60, visits=2)
    scores = (df.assign(err=(df.y_pred - df.y_true).abs())
              .groupby(["task", "backbone", "perturbation", "severity"], as_index=False)["err"].mean()
              .rename(columns={"err": "value"}).assign(metric="mae", err=0.1))
    files, preds = [tmp_path / "scores.parquet"], [tmp_path / "preds.parquet"]
    write_parquet(files[0], scores)
    write_parquet(preds[0], df)
    table, figure, comp = tmp_path / "p.md", tmp_path / "p.png", tmp_path / "cmp.parquet"
    perturbation_stats(files, table, figure, reference="braindino", predictions=preds, comparison_path=comp,
                       n_boot=50, labels={"braindino": "BrainDINO", "dinov3": "DINOv3"})
    tests = pd.read_parquet(comp)
    p2 = tests[(tests.backbone == "dinov3") & (tests.severity == 2.0)].p_value.item()
    assert p2 < 0.001
    wide = pd.read_csv(table.with_suffix(".csv")).set_index("backbone")
    assert wide.loc["DINOv3", "gamma 2"].endswith("***")
    assert not wide.loc["BrainDINO", "gamma 2"].endswith("*")
    assert "vs BrainDINO" in table.read_text() and figure.with_suffix(".pdf").is_file()


def test_settings_without_the_reference_are_left_out():
    df = _items("regression")
    out = perturbation_comparison(df[df.backbone != "braindino"], "braindino", n_boot=20)
    assert out.empty


def test_pooled_predictions_average_seeds_and_keep_one_row_per_scan():
    from brainfm.config import TaskSpec
    from brainfm.tasks.perturbation import pooled_predictions

    spec = TaskSpec.from_json('{"name": "t", "kind": "classification", "dataset": "d", "target": "y", '
                              '"classes": ["a", "b"], "ratios": [1.0], "seeds": [0], "head": {}}')
    pred = pd.DataFrame(dict(fold=[0, 0, 1, 1], seed=[0, 1, 0, 1], subject=["s1", "s1", "s2", "s2"],
                             session=["0"] * 4, kind="classification", y_true=[1.0, 1.0, 0.0, 0.0],
                             y_pred=[1.0, 0.0, 0.0, 0.0], prob_0=[0.2, 0.6, 0.9, 0.7], prob_1=[0.8, 0.4, 0.1, 0.3]))
    out = pooled_predictions(spec, pred, backbone="b")
    assert list(out.subject) == ["s1", "s2"] and list(out.prob_1) == pytest.approx([0.6, 0.2])
    assert list(out.y_pred) == [1.0, 0.0] and set(out.seed) == {0} and set(out.fold) == {0}
    with pytest.raises(Exception, match="several folds"):
        pooled_predictions(spec, pred.assign(subject="s1"), backbone="b")


def test_perturbation_error_bars_resample_subjects_not_visits():
    from brainfm.config import TaskSpec
    from brainfm.stats import bootstrap_ci
    from brainfm.tasks.perturbation import _score

    spec = TaskSpec.from_json('{"name": "t", "kind": "regression", "dataset": "d", "target": "y", '
                              '"ratios": [1.0], "seeds": [0], "head": {}}')
    df = _items("regression", n=30, visits=4)
    pred = df[(df.backbone == "braindino") & (df.severity == 1.0)].assign(seed=0)
    got = _score(spec, pred, n_boot=300, seed=2)
    pred = pred.sort_values(["fold", "subject", "session"])
    ref = bootstrap_ci(pred.y_true.to_numpy(), pred.y_pred.to_numpy(), "mae", n_boot=300, seed=2, stratify=False,
                       groups=pred.subject.to_numpy())
    assert got["value"] == pytest.approx(ref.estimate) and got["err"] == pytest.approx(ref.sd)
