"""The two report steps that only format: the headline table and the CKA figure."""

import json

import numpy as np
import pytest
import pandas as pd

from brainfm.atomic import write_parquet
from brainfm.errors import InputError
from brainfm.report.build import cka_figure, summary_table
from brainfm.report.tables import format_estimate


def test_summary_table_keeps_full_supervision_and_the_largest_k(tmp_path):
    comparison = pd.DataFrame([dict(task="age", metric="mae", ratio=r, backbone=b, estimate=e, sd=0.5, ci_low=e - 1,
                                    ci_high=e + 1, p_value=p)
                               for r in (0.1, 1.0)
                               for b, e, p in (("braindino", 5.0, np.nan), ("dinov3", 6.5, 0.003))])
    knn = pd.DataFrame([dict(task="knn_t", k=k, backbone=b, accuracy=a, sd=0.02, ci_low=a - 0.05, ci_high=a + 0.05,
                             p_holm=p)
                        for k in (1, 20) for b, a, p in (("braindino", 0.8, np.nan), ("dinov3", 0.7, 0.2))])
    write_parquet(tmp_path / "comparison.parquet", comparison)
    write_parquet(tmp_path / "knn.parquet", knn)
    out = summary_table([tmp_path / "comparison.parquet"], [tmp_path / "knn.parquet"], tmp_path / "summary.md",
                        reference="braindino", labels={"dinov3": "DINOv3"})
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [(r["task"], r["metric"], r["backbone"]) for r in rows] == [
        ("age", "mae", "braindino"), ("age", "mae", "DINOv3"),
        ("knn_t", "knn_accuracy@k=20", "braindino"), ("knn_t", "knn_accuracy@k=20", "DINOv3")]
    assert rows[1]["estimate"] == format_estimate("mae", 6.5, 0.5, 5.5, 7.5) and rows[1]["p vs braindino"]
    assert all(out.with_suffix(s).is_file() for s in (".md", ".csv", ".tex"))
    assert "At the fewest labels" not in out.read_text()  # no controls configured: nothing to count


def test_cka_figure_writes_png_and_pdf_from_the_cohort_files(tmp_path):
    files = []
    for cohort in ("oasis", "adni"):
        frame = pd.DataFrame([dict(backbone=b, reference="braindino", depth=d, cka=c)
                              for b in ("dinov3", "bmmae") for d, c in (("early", 0.9), ("mid", 0.6), ("late", 0.4))])
        files.append(tmp_path / f"cka_{cohort}.parquet")
        write_parquet(files[-1], frame)
    path = cka_figure(files, tmp_path / "cka.png", reference="braindino")
    assert path.with_suffix(".png").stat().st_size > 0 and path.with_suffix(".pdf").is_file()


def test_composite_figure_orders_the_paper_panels(tmp_path):
    import sys
    from pathlib import Path

    from brainfm.report.build import composite_figure, composite_panels
    from brainfm.stats.comparison import compare_predictions

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stats"))
    from test_compare import make_predictions

    files, parts = [], []
    for task, kind in (("brain_age", "regression"), ("extra", "classification"), ("abide", "classification")):
        tidy = compare_predictions(make_predictions(kind, n=30).assign(task=task), "braindino", n_boot=20)
        files.append(tmp_path / f"{task}.parquet")
        tidy.to_parquet(files[-1])
        parts.append(tidy)
    panels, titles = composite_panels(pd.concat(parts), {"abide": "ASD"})
    assert panels == [("abide", "macro_auc"), ("brain_age", "mae")]  # paper order (d before j); 'extra' left out
    assert titles[("abide", "macro_auc")] == "(d) ASD" and titles[("brain_age", "mae")] == "(j) brain_age"
    out = composite_figure(files, tmp_path / "fig3.png", reference="braindino")
    assert out.with_suffix(".pdf").is_file()


def test_summary_lists_reference_rows_last_and_states_each_backbones_advantage_over_its_control(tmp_path):
    from brainfm.report.build import advantage

    def row(task, metric, ratio, b, e, delta=np.nan, lo=np.nan, hi=np.nan, higher=True, ref="braindino"):
        return dict(task=task, metric=metric, ratio=ratio, backbone=b, reference=ref, estimate=e, sd=0.02,
                    ci_low=e - 0.05, ci_high=e + 0.05, p_value=0.04, delta=delta, delta_ci_low=lo, delta_ci_high=hi,
                    test="paired bootstrap", higher_is_better=higher)

    rows, control_rows = [], []
    for r in (0.1, 1.0):
        rows += [row("oasis", "auc", r, "prior", 0.5), row("oasis", "auc", r, "image_stats", 0.7),
                 row("oasis", "auc", r, "braindino", 0.8), row("oasis", "auc", r, "phantom_oracle", 0.9),
                 row("oasis", "auc", r, "brainfound", 0.6), row("oasis", "auc", r, "vit_random", 0.75),
                 row("age", "mae", r, "braindino", 6.0, higher=False),
                 row("age", "mae", r, "vit_random", 9.0, higher=False)]
        if r == 1.0:  # segmentation: no controls table; its main comparison holds the reference's pair
            rows += [row("tumor", "dice_WT", r, "braindino", 0.6),
                     row("tumor", "dice_WT", r, "vit_random", 0.55, -0.05, -0.08, -0.02)]
        # the statistics step's control rows: the control compared with each pretrained backbone
        control_rows += [row("oasis", "auc", r, "vit_random", 0.75, -0.05, -0.12, 0.02),
                         row("oasis", "auc", r, "vit_random", 0.75, 0.15, 0.05, 0.25, ref="brainfound"),
                         row("age", "mae", r, "vit_random", 9.0, 3.0, 1.0, 5.0, higher=False)]
    path, controls_path = tmp_path / "comparison.parquet", tmp_path / "controls.parquet"
    write_parquet(path, pd.DataFrame(rows))
    write_parquet(controls_path, pd.DataFrame(control_rows))
    adv = advantage(pd.DataFrame(control_rows), "braindino", "vit_random").set_index("task")  # the fewest labels
    assert set(adv["ratio"]) == {0.1}
    assert advantage(pd.DataFrame(control_rows), "braindino", "vit_random", 1.0)["ratio"].tolist() == [1.0, 1.0]
    assert adv.loc["oasis", "advantage"] == pytest.approx(0.05) and adv.loc["oasis", "verdict"].startswith("not ahead")
    assert (adv.loc["oasis", "low"], adv.loc["oasis", "high"]) == pytest.approx((-0.02, 0.12))
    assert adv.loc["age", "advantage"] == pytest.approx(3.0) and adv.loc["age", "verdict"] == "ahead"
    found = advantage(pd.DataFrame(control_rows), "brainfound", "vit_random")
    assert found["advantage"].tolist() == pytest.approx([-0.15]) and found["verdict"].tolist() == ["behind"]
    labels = {"braindino": "BrainDINO", "vit_random": "ViT (random init)", "brainfound": "BrainFound",
              "prior": "prior"}
    out = summary_table([path], [], tmp_path / "summary.md", reference="braindino", labels=labels,
                        control_files=[controls_path], controls={"braindino": "vit_random", "brainfound": "vit_random"})
    recs = json.loads(out.with_suffix(".json").read_text())
    oasis = [r["backbone"] for r in recs if r["task"] == "oasis"]
    assert oasis[:3] == ["BrainDINO", "BrainFound", "ViT (random init)"]
    assert all("reference" in b for b in oasis[3:]) and len(oasis) == 6
    col = "advantage over own random init at the fewest labels"
    by = {(r["task"], r["backbone"]): r[col] for r in recs}
    assert by[("oasis", "BrainDINO")] == ("vs ViT (random init) at 10%: +0.050 [-0.020, +0.120]: "
                                          "not ahead (interval includes 0)")
    assert by[("oasis", "BrainFound")] == "vs ViT (random init) at 10%: -0.150 [-0.250, -0.050]: behind"
    assert by[("age", "BrainDINO")].endswith(": ahead") and by[("oasis", "ViT (random init)")] == ""
    assert by[("tumor", "BrainDINO")] == "vs ViT (random init) at 100%: +0.050 [+0.020, +0.080]: ahead"
    text = out.read_text()
    assert "reference" in text and "BrainDINO vs ViT (random init); BrainFound vs ViT (random init)" in text
    assert "not a repeat of the pretraining run" in text  # what the interval leaves out is said
    assert ("At the fewest labels, BrainDINO is ahead of ViT (random init) on 2 of 3 comparisons, behind on 0, and "
            "neither ahead nor behind on 1; BrainFound is ahead of ViT (random init) on 0 of 1 comparisons, behind "
            "on 1, and neither ahead nor behind on 0.") in text
    assert "‡" not in text  # no training_n files: nothing to mark

    # the random-init ViT's heads at 10% on OASIS kept their first epoch (both seeds); BrainDINO's at 100% on
    # age did too, which is not the ratio the last column compares; 40% on age at 10% is under the mark's half
    cells = (("oasis", "vit_random", 0.1, 1.0), ("oasis", "braindino", 0.1, 0.0), ("age", "braindino", 1.0, 1.0),
             ("age", "vit_random", 0.1, 0.4))
    n = pd.DataFrame([dict(task=t, backbone=b, ratio=r, seed=sd, first_epoch_share=f)
                      for sd in (0, 1) for t, b, r, f in cells])
    write_parquet(tmp_path / "training_n.parquet", n)
    out = summary_table([path], [], tmp_path / "marked.md", reference="braindino", labels=labels,
                        control_files=[controls_path], controls={"braindino": "vit_random", "brainfound": "vit_random"},
                        training_n_files=[tmp_path / "training_n.parquet"])
    by = {(r["task"], r["backbone"]): r[col] for r in json.loads(out.with_suffix(".json").read_text())}
    assert by[("oasis", "BrainDINO")].endswith("not ahead (interval includes 0) ‡")
    assert by[("oasis", "BrainFound")].endswith("behind ‡")
    assert by[("age", "BrainDINO")].endswith(": ahead") and by[("tumor", "BrainDINO")].endswith(": ahead")
    assert "‡: at that ratio at least half of the heads of the backbone or of its control kept their first epoch" \
        in out.read_text()


def test_a_damaged_input_table_names_its_file_and_nothing_is_written(tmp_path):
    comparison = pd.DataFrame([dict(task="age", metric="mae", ratio=1.0, backbone=b, estimate=5.0, sd=0.5,
                                    ci_low=4.0, ci_high=6.0, p_value=np.nan) for b in ("braindino", "vit_random")])
    write_parquet(tmp_path / "comparison.parquet", comparison)
    write_parquet(tmp_path / "training_n.parquet", pd.DataFrame(dict(task=["age"], backbone=["braindino"],
                                                                     ratio=[1.0], seed=[0], first_epoch_share=[0.0])))
    good = tmp_path / "training_n.parquet"
    truncated = tmp_path / "other" / "training_n.parquet"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:100])
    gone = tmp_path / "gone.parquet"
    out = tmp_path / "summary.md"
    for kwargs, path, reason in ((dict(training_n_files=[good, truncated]), truncated, "cannot read training-n table"),
                                 (dict(control_files=[gone]), gone, "random-init control comparison does not exist")):
        with pytest.raises(InputError) as err:
            summary_table([tmp_path / "comparison.parquet"], [], out, reference="braindino",
                          controls={"braindino": "vit_random"}, **kwargs)
        assert err.value.path == str(path) and err.value.reason.startswith(reason)
        assert not list(tmp_path.glob("summary*"))
    summary_table([tmp_path / "comparison.parquet"], [], out, reference="braindino", training_n_files=[good])
    assert out.is_file()  # the same inputs without the damaged one go through
