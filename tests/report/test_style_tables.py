"""Colours, names and the table notation/writers."""

import pandas as pd
import pytest

from brainfm.report.style import (
    EXTRA_COLORS,
    KNOWN_COLORS,
    backbone_color,
    display_name,
    metric_label,
    order_backbones,
    palette,
)
from brainfm.report.tables import (
    comparison_table,
    format_estimate,
    format_p,
    km_summary_table,
    knn_wide_table,
    strata_wide_table,
    to_latex,
    to_markdown,
    write_table,
)


def test_known_backbones_have_fixed_distinct_colours():
    assert backbone_color("braindino") == KNOWN_COLORS["braindino"] == backbone_color("BrainDINO")
    assert len(set(KNOWN_COLORS.values())) == len(KNOWN_COLORS)
    for name in ("dinov3", "brainiac", "brainiac_simclr", "bmmae", "brainmvp", "brainfound", "scratch", "vit_random"):
        assert name in KNOWN_COLORS


def test_unknown_names_get_deterministic_colours_independent_of_the_figure():
    c = backbone_color("my_encoder")
    assert c in EXTRA_COLORS and c == backbone_color("my_encoder")
    alone = palette(["my_encoder"])["my_encoder"]
    with_others = palette(["braindino", "dinov3", "my_encoder"])["my_encoder"]
    assert alone == with_others == c


def test_palette_resolves_collisions_among_unknown_names():
    names = [f"enc{i}" for i in range(len(EXTRA_COLORS))]
    pal = palette(names + ["braindino"])
    assert len(set(pal.values())) == len(pal)  # all distinct
    assert pal == palette(list(reversed(names)) + ["braindino"])  # order-independent


def test_display_names_and_order():
    assert display_name("bmmae") == "BM-MAE" and display_name("custom_net") == "custom_net"
    assert order_backbones(["zeta", "dinov3", "bmmae", "braindino"], "braindino") == ["braindino", "dinov3", "bmmae",
                                                                                       "zeta"]
    assert metric_label("dice_ET") == "Dice (ET)" and metric_label("macro_auc") == "Macro-AUC"


def test_estimate_notation_follows_the_paper():
    assert format_estimate("macro_auc", 0.8504, low=0.7541, high=0.9472, stars="**") == "0.850 [0.754, 0.947]**"
    assert format_estimate("dice_WT", 0.9161, sd=0.0152) == "0.916 ± 0.015"
    assert format_estimate("mae", 7.333, sd=0.851, stars="*") == "7.33 ± 0.85*"
    assert format_estimate("mae", 56.61, sd=4.12) == "56.6 ± 4.1"
    assert format_estimate("auc", float("nan")) == "–"
    assert format_p(0.0) == "<0.001" and format_p(0.0234) == "0.023" and format_p(float("nan")) == "–"


def _tidy():
    rows = []
    for ratio in (0.1, 1.0):
        rows.append(dict(task="adni", metric="macro_auc", ratio=ratio, backbone="braindino", reference="braindino",
                         estimate=0.85, sd=0.02, ci_low=0.80, ci_high=0.90, stars=""))
        rows.append(dict(task="adni", metric="macro_auc", ratio=ratio, backbone="dinov3", reference="braindino",
                         estimate=0.70, sd=0.03, ci_low=0.64, ci_high=0.76, stars="***" if ratio == 1.0 else ""))
    rows.append(dict(task="age", metric="mae", ratio=1.0, backbone="braindino", reference="braindino", estimate=5.54,
                     sd=0.75, ci_low=4.1, ci_high=7.0, stars=""))
    return pd.DataFrame(rows)


def test_comparison_table_layout_and_cells():
    wide = comparison_table(_tidy())
    assert list(wide.columns) == ["Task", "Metric", "Backbone", "10%", "100%"]
    assert wide.Backbone.tolist() == ["BrainDINO", "DINOv3", "BrainDINO"]
    assert wide.iloc[1]["100%"] == "0.700 [0.640, 0.760]***"
    assert wide.iloc[2]["100%"] == "5.54 ± 0.75" and wide.iloc[2]["10%"] == "–"


def test_markdown_and_latex_escape_their_special_characters():
    wide = comparison_table(_tidy())
    md = to_markdown(wide, caption="Table 8")
    assert "0.700 [0.640, 0.760]\\*\\*\\*" in md and md.splitlines()[2].startswith("| Task |")
    tex = to_latex(wide, caption="ADNI 100% results", label="tab:adni")
    assert r"0.700 [0.640, 0.760]$^{***}$" in tex
    assert r"5.54 $\pm$ 0.75" in tex and r"100\%" in tex and r"\label{tab:adni}" in tex
    assert tex.count(r"\\") >= 4 and r"\toprule" in tex and r"\bottomrule" in tex
    knn = pd.DataFrame([dict(task="oasis_knn", k=5, backbone="braindino", reference="braindino", accuracy=0.7,
                             ci_low=0.6, ci_high=0.8, stars="")])
    assert r"oasis\_knn" in to_latex(knn_wide_table(knn))


def test_write_table_writes_three_formats_atomically(tmp_path):
    wide = comparison_table(_tidy())
    paths = write_table(wide, tmp_path / "tables" / "supp8.csv", caption="Supplementary Table 8")
    assert [p.name for p in paths] == ["supp8.csv", "supp8.md", "supp8.tex"]
    back = pd.read_csv(paths[0], dtype=str)
    pd.testing.assert_frame_equal(back, wide.astype(str))
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["supp8.csv", "supp8.md", "supp8.tex"]
    with pytest.raises(ValueError, match="unknown table format"):
        write_table(wide, tmp_path / "x", formats=("xlsx",))


def test_empty_frame_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        comparison_table(pd.DataFrame(columns=["task", "metric", "ratio", "backbone"]))


def test_display_label_mapping_overrides_names_but_not_colours():
    labels = {"BrainDINO": "BrainDINO (ViT-S/16)", "my_encoder": "Mine"}
    assert display_name("braindino", labels) == "BrainDINO (ViT-S/16)"  # case-insensitive key
    assert display_name("my_encoder", labels) == "Mine"
    assert display_name("dinov3", labels) == "DINOv3"  # unmapped: paper spelling
    wide = comparison_table(_tidy(), labels={"dinov3": "DINOv3 ViT-S"})
    assert wide.Backbone.tolist() == ["BrainDINO", "DINOv3 ViT-S", "BrainDINO"]


def test_strata_and_km_tables():
    strata = pd.DataFrame([
        dict(task="age", metric="mae", stratum=s, age_low=lo, backbone=b, reference="braindino", n=n,
             estimate=e, sd=0.5, ci_low=e - 1, ci_high=e + 1, stars=st)
        for s, lo, n in (("70+", 70, 12), ("0–9", 0, 30))
        for b, e, st in (("braindino", 2.31, ""), ("dinov3", 3.70, "*"))])
    wide = strata_wide_table(strata, labels={"dinov3": "D3"})
    assert list(wide.columns) == ["Task", "Metric", "Backbone", "0–9", "70+"]  # ordered by age
    assert wide.Backbone.tolist() == ["BrainDINO", "D3", "n"]
    assert wide.iloc[1]["0–9"] == "3.70 ± 0.50*" and wide.iloc[2]["70+"] == "12"
    km = pd.DataFrame([dict(task="upenn", backbone="braindino", ratio=0.2, seed=0, n_low=40, n_high=38,
                            median_low=439.0, median_high=235.0, statistic=9.87, p_value=0.0017, stars="**"),
                       dict(task="upenn", backbone="bmmae", ratio=0.2, seed=0, n_low=41, n_high=37,
                            median_low=float("inf"), median_high=300.0, statistic=0.5, p_value=0.48, stars="")])
    t = km_summary_table(km)
    assert t.Backbone.tolist() == ["BrainDINO", "BM-MAE"]
    assert t.iloc[0]["p"] == "0.002**" and t.iloc[0]["Median low"] == "439" and t.iloc[0]["n low/high"] == "40/38"
    assert t.iloc[1]["Median low"] == "not reached"


def test_reference_rows_are_grey_last_and_labelled():
    from brainfm.report.style import backbone_color, display_name, linestyle, order_backbones

    names = ["prior", "phantom_oracle", "myenc", "image_stats", "vit_random", "braindino"]
    assert order_backbones(names, "braindino") == ["braindino", "vit_random", "myenc", "phantom_oracle",
                                                   "image_stats", "prior"]
    for ref in ("prior", "image_stats", "phantom_oracle"):
        assert "reference" in display_name(ref) and "reference" in display_name(ref, {ref: ref})
        r, g, b = (int(backbone_color(ref)[i:i + 2], 16) for i in (1, 3, 5))
        assert r == g == b  # grey
        assert linestyle(ref) == "--"
    assert display_name("prior", {"prior": "Chance"}) == "Chance (reference)"
    assert linestyle("braindino") == "-" and "reference" not in display_name("braindino")


def test_knn_wide_table_has_majority_row_and_marks_k_reaching_the_smallest_class():
    import pandas as pd

    from brainfm.report.tables import KNN_MAJORITY_ROW, KNN_MIN_CLASS_MARK, knn_caption, knn_wide_table

    knn = pd.DataFrame([dict(task="t", k=k, backbone=b, accuracy=0.7, sd=0.02, ci_low=0.6, ci_high=0.8, p_holm=0.5,
                             stars="", majority_accuracy=0.55, bank_majority_fraction=0.6, bank_min_class_size=20,
                             k_reaches_min_class=k >= 20)
                        for k in (5, 20) for b in ("braindino", "prior")])
    wide = knn_wide_table(knn, "braindino")
    assert wide["Backbone"].tolist()[-1] == KNN_MAJORITY_ROW and wide["k=5"].iloc[-1] == "0.550"
    assert wide["k=20"].iloc[0].endswith(KNN_MIN_CLASS_MARK) and not wide["k=5"].iloc[0].endswith(KNN_MIN_CLASS_MARK)
    assert "t: 20" in knn_caption(knn)
