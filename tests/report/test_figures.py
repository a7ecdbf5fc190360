"""Figures: drawn from real statistics frames, saved atomically, readable (no colliding labels)."""

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from brainfm.report import figures as F
from brainfm.report.style import KNOWN_COLORS, save_figure
from brainfm.stats.comparison import compare_predictions
from brainfm.stats.km import km_table
from brainfm.stats.knn import knn_table
from brainfm.stats.strata import age_strata_table

BACKBONES = ("braindino", "dinov3", "bmmae", "brainmvp")


def _predictions(kind, n=50, ratios=(0.1, 0.4, 1.0), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    y = rng.integers(0, 2, n)
    target = rng.uniform(5, 90, n)
    time = rng.exponential(500, n)
    event = rng.integers(0, 2, n)
    for b_i, b in enumerate(BACKBONES):
        for r in ratios:
            for i in range(n):
                row = dict(task=f"demo_{kind}", backbone=b, ratio=r, seed=0, fold=0, subject=f"s{i:03d}", session="0",
                           kind=kind, age=target[i])
                if kind == "classification":
                    p1 = 1 / (1 + np.exp(-((2 - 0.4 * b_i) * (y[i] - 0.5) + rng.normal())))
                    row.update(y_true=float(y[i]), y_pred=float(p1 > 0.5), prob_0=1 - p1, prob_1=p1)
                elif kind == "regression":
                    row.update(y_true=target[i], y_pred=target[i] + rng.normal(0, 3 + 2 * b_i))
                else:
                    row.update(y_true=time[i], time=time[i], event=event[i],
                               y_pred=-np.log(time[i]) * (1.5 - 0.3 * b_i) + rng.normal())
                rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tidy():
    frames = [compare_predictions(_predictions(k), n_boot=50) for k in ("classification", "regression", "survival")]
    return pd.concat(frames, ignore_index=True)


def _label_texts(fig):
    """Titles, axis labels, tick labels and legend texts (not data annotations inside the axes)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        # tick labels the locator proposes outside the view limits are not drawn
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        texts += [t for t in ax.get_xticklabels() if x0 - 1e-9 <= t.get_position()[0] <= x1 + 1e-9]
        texts += [t for t in ax.get_yticklabels() if y0 - 1e-9 <= t.get_position()[1] <= y1 + 1e-9]
    for leg in fig.legends:
        texts += list(leg.get_texts()) + [leg.get_title()]
    if fig._suptitle is not None:
        texts.append(fig._suptitle)
    texts = [t for t in texts if isinstance(t, Text) and t.get_visible() and t.get_text().strip()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts]


def _assert_no_overlaps(fig):
    boxes = _label_texts(fig)
    assert boxes, "figure has no labels"
    width, height = fig.canvas.get_width_height()
    for text, box in boxes:  # inside the canvas
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, text
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        overlap_w = min(a.x1, b.x1) - max(a.x0, b.x0)
        overlap_h = min(a.y1, b.y1) - max(a.y0, b.y0)
        assert overlap_w <= 1 or overlap_h <= 1, f"labels overlap: {ta!r} and {tb!r}"


def _assert_saved(paths, tmp_path):
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    leftovers = [p.name for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_metric_vs_ratio(tidy, tmp_path):
    fig = F.draw_metric_vs_ratio(tidy)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    ax = visible[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10%", "40%", "100%"]
    # reference drawn in its fixed colour
    colours = {line.get_color() for line in ax.get_lines()}
    assert KNOWN_COLORS["braindino"] in colours and KNOWN_COLORS["bmmae"] in colours
    assert "lower is better" in visible[1].get_ylabel()
    _assert_no_overlaps(fig)
    _assert_saved(F.metric_vs_ratio(tidy, tmp_path / "fig3.png", dpi=60), tmp_path)


def test_km_grid(tmp_path):
    preds = _predictions("survival", n=60, ratios=(0.2, 1.0))
    stats_, curves = km_table(preds[preds.backbone != "brainmvp"])
    fig = F.draw_km_grid(curves, stats_, max_time=2000)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 * 3
    assert [ax.get_title() for ax in axes[:3]] == ["BrainDINO", "DINOv3", "BM-MAE"]
    assert axes[0].get_xlim() == (0, 2000)
    inner = [t.get_text() for t in axes[0].texts]
    assert any(t.startswith("log-rank p") for t in inner)
    _assert_no_overlaps(fig)
    _assert_saved(F.km_grid(curves, stats_, tmp_path / "fig4", dpi=60), tmp_path)


def test_perturbation_bars(tmp_path):
    rng = np.random.default_rng(0)
    rows = [dict(backbone=b, perturbation=p, severity=s, metric=m, value=rng.uniform(0.4, 0.9), err=0.02)
            for b in BACKBONES for p in ("Bias field", "Gibbs", "Contrast") for s in (0.0, 0.4)
            for m in ("macro_auc", "mae")]
    frame = pd.DataFrame(rows)
    fig = F.draw_perturbation_bars(frame)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["Bias field", "Gibbs", "Contrast"]
    assert len(fig.axes[0].patches) == 2 * len(BACKBONES)
    _assert_no_overlaps(fig)
    _assert_saved(F.perturbation_bars(frame, tmp_path / "fig5", dpi=60), tmp_path)
    with pytest.raises(ValueError, match="lacks columns"):
        F.draw_perturbation_bars(frame.drop(columns="err"))


def test_knn_accuracy_and_cka(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    rows = [dict(task=t, backbone=b, subject=f"s{i}", y_true=y[i], k=k, y_pred=y[i], correct=int(rng.random() < 0.7))
            for t in ("ADNI", "OASIS") for b in BACKBONES for k in (1, 3, 5, 10, 20, 50) for i in range(60)]
    knn = knn_table(pd.DataFrame(rows), n_boot=50)
    fig = F.draw_knn_accuracy(knn)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "3", "5", "10", "20", "50"]
    _assert_no_overlaps(fig)
    _assert_saved(F.knn_accuracy(knn, tmp_path / "fig6b_knn", dpi=60), tmp_path)

    cka = pd.DataFrame([dict(cohort=c, reference="braindino", backbone=b, depth=d, cka=rng.uniform())
                        for c in ("IXI", "BraTS") for b in BACKBONES[1:] for d in ("early", "mid", "late")])
    fig = F.draw_cka_heatmap(cka)
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 2 and heat[0].images[0].get_array().shape == (3, 3)
    assert heat[0].get_title() == "CKA with BrainDINO: IXI"
    _assert_no_overlaps(fig)
    _assert_saved(F.cka_heatmap(cka, tmp_path / "fig6b_cka", dpi=60), tmp_path)


def test_age_strata_bars(tmp_path):
    preds = pd.concat([_predictions("regression", n=80, ratios=(1.0,)),
                       _predictions("classification", n=80, ratios=(1.0,))])
    strata = age_strata_table(preds, edges=(0, 10, 30, 50, 70, np.inf), n_boot=50, n_perm=500)
    fig = F.draw_age_strata_bars(strata)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [t.get_text() for t in visible[0].get_xticklabels()] == ["0–9", "10–29", "30–49", "50–69", "70+"]
    _assert_no_overlaps(fig)
    _assert_saved(F.age_strata_bars(strata, tmp_path / "fig3k", dpi=60), tmp_path)


def test_saved_pdf_is_reproducible(tidy, tmp_path):
    a = save_figure(F.draw_metric_vs_ratio(tidy), tmp_path / "a", formats=("pdf",))[0].read_bytes()
    b = save_figure(F.draw_metric_vs_ratio(tidy), tmp_path / "b", formats=("pdf",))[0].read_bytes()
    assert a == b


def test_display_labels_change_legend_text_not_colours(tidy):
    fig = F.draw_metric_vs_ratio(tidy, labels={"bmmae": "BM-MAE (rerun)"})
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["BrainDINO", "DINOv3", "BM-MAE (rerun)", "BrainMVP"]
    colour = {t: h.get_color() for t, h in zip(texts, legend.legend_handles)}
    assert colour["BM-MAE (rerun)"] == KNOWN_COLORS["bmmae"]
    stats_, curves = km_table(_predictions("survival", n=40, ratios=(1.0,)))
    fig = F.draw_km_grid(curves, stats_, labels={"braindino": "Ours"})
    assert fig.axes[0].get_title() == "Ours"
