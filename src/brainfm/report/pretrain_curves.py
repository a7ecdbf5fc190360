"""Did pretraining learn? The loss of each run against the loss of an uninformative prediction.

A DINO loss can only fall well below ln K (K prototypes) when the teacher's targets are sharp:
a near-uniform teacher keeps the cross-entropy at ln K whatever the student learns (the demo's
old failure: 6.89 against ln 1024 = 6.93). So next to each DINO / BrainFound loss curve this
step draws the teacher's mean per-sample entropy (sharpness: low is sharp) and the entropy of its
batch-mean distribution (diversity: ln K means every prototype is used; low means collapse). For
SimCLR the reference is ln(2N - 1), the NT-Xent of a view that cannot tell its partner from the
other 2N - 2 views, and the second panel shows the mean cosine of positive pairs.

Rule ``pretrain_curves`` -> ``brainfm pretrain-curves`` -> :func:`pretrain_curves`. Reads the
``curve`` columns of each run's ``summary.json`` (:func:`brainfm.ssl.monitor.read_curve`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainfm.atomic import write_text
from brainfm.errors import InputError

__all__ = ["load_curves", "final_values", "draw_pretrain_curves", "pretrain_curves"]

_DINO = ("dino", "brainfound")


def load_curves(summary_files: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One entry per run: name, recipe, the concatenated curve of its stages, and its uniform-loss level."""
    runs = []
    for f in summary_files:
        try:
            summary = json.loads(Path(f).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f, f"not a readable pretraining summary: {exc}") from exc
        stages = summary.get("stages") or []
        curve: dict[str, list] = {}
        for st in stages:
            for k, v in (st.get("curve") or {}).items():
                curve.setdefault(k, []).extend(v)
        if not curve.get("iteration") or not curve.get("loss"):
            raise InputError(f, "the summary has no training curve (stages[].curve with iteration and loss): "
                                "rerun the pretrain rule with this version of brainfm")
        runs.append({"run": summary.get("run") or Path(f).parent.name, "recipe": summary.get("recipe", ""),
                     "precision": summary.get("precision"), "curve": curve})
    return runs


def _last(values: Sequence[float | None] | None) -> float | None:
    for v in reversed(values or []):
        if v is not None and math.isfinite(v):
            return float(v)
    return None


#: the final loss is the mean of the last logged values: one minibatch's loss is noisy (a SimCLR
#: batch of 16 moves NT-Xent by +-0.5 between logs), so a single value can call a run learned or not
FINAL_LOGS = 5


def _tail_mean(values: Sequence[float | None] | None, n: int = FINAL_LOGS) -> float | None:
    finite = [float(v) for v in values or [] if v is not None and math.isfinite(v)]
    return sum(finite[-n:]) / len(finite[-n:]) if finite else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def final_values(run: Mapping[str, Any]) -> dict[str, Any]:
    """The values that say whether a run learned (None where the recipe has no such value).

    ``loss`` is the mean of the last :data:`FINAL_LOGS` logged losses (a run still learning is
    judged slightly above its last value); the uniform level and the teacher entropies are the
    last logged values.
    """
    c = run["curve"]
    dino = run["recipe"] in _DINO
    loss = _tail_mean(c.get("dino") if dino else c.get("nt_xent") or c.get("loss"))
    uniform = _last(c.get("ln_k") if dino else c.get("uniform_loss"))
    return {"run": run["run"], "recipe": run["recipe"], "iterations": int(c["iteration"][-1]) + 1,
            "loss": loss, "uniform_loss": uniform,
            "loss_over_uniform": (loss / uniform) if loss is not None and uniform else None,
            "teacher_entropy": _last(c.get("teacher_entropy")),
            "teacher_batch_entropy": _last(c.get("teacher_batch_entropy")),
            # how much the teacher's target says about which sample it saw (0: collapsed or uniform;
            # at most ln of the batch's crop count)
            "teacher_information": _diff(_last(c.get("teacher_batch_entropy")), _last(c.get("teacher_entropy"))),
            "total_loss": _last(c.get("loss")), "precision": run.get("precision")}


def draw_pretrain_curves(runs: Sequence[Mapping[str, Any]], labels: Mapping[str, str] | None = None):
    """Figure: per run, the loss against its uniform level (left) and teacher entropies or positive cosine (right)."""
    from brainfm.report.style import display_name, new_figure, style

    with style():
        fig, axes = new_figure(len(runs), 2, panel=(3.6, 2.5))
        for i, run in enumerate(runs):
            c, name = run["curve"], display_name(run["run"], labels)
            it = [int(v) + 1 for v in c["iteration"]]
            ax_l, ax_r = axes[2 * i], axes[2 * i + 1]
            if run["recipe"] in _DINO:
                ln_k = _last(c.get("ln_k"))
                ax_l.plot(it, c.get("dino") or c["loss"], label="DINO loss", color="C0")
                if ln_k is not None:
                    ax_l.axhline(ln_k, color="0.3", ls="--", lw=1, label=f"ln K = {ln_k:.2f}")
                    ax_r.axhline(ln_k, color="0.3", ls="--", lw=1, label="ln K")
                if c.get("teacher_entropy"):
                    ax_r.plot(it, c["teacher_entropy"], color="C1", label="per-sample (sharpness)")
                if c.get("teacher_batch_entropy"):
                    ax_r.plot(it, c["teacher_batch_entropy"], color="C2", label="batch mean (diversity)")
                ax_r.set_ylabel("teacher entropy (nats)")
                ax_r.set_ylim(bottom=0)
            else:
                uni = _last(c.get("uniform_loss"))
                ax_l.plot(it, c.get("nt_xent") or c["loss"], label="NT-Xent loss", color="C0")
                if uni is not None:
                    ax_l.axhline(uni, color="0.3", ls="--", lw=1, label=f"ln(2N-1) = {uni:.2f}")
                if c.get("pos_cos"):
                    ax_r.plot(it, c["pos_cos"], color="C1", label="positive-pair cosine")
                ax_r.set_ylabel("cosine")
            ax_l.set_ylabel("loss (nats)")
            ax_l.set_title(f"{name} ({run['recipe']})")
            ax_r.set_title(f"{name}: " + ("teacher" if run["recipe"] in _DINO else "views"))
            for ax in (ax_l, ax_r):
                ax.set_xlabel("iteration")
                ax.legend(fontsize=7, loc="best")
        return fig


def _table(rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str] | None) -> str:
    from brainfm.report.style import display_name

    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    lines = [f"| run | recipe | iterations | final loss (mean of the last {FINAL_LOGS} logs) | "
             "uniform loss (ln K or ln(2N-1)) | loss / uniform | teacher entropy | teacher batch-mean entropy | "
             "batch-mean minus per-sample | learned? |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["loss_over_uniform"]
        verdict = "–" if ratio is None else ("yes" if ratio < 0.8 else "no: loss near the uniform level")
        lines.append(f"| {display_name(r['run'], labels)} | {r['recipe']} | {r['iterations']} | {f(r['loss'])} | "
                     f"{f(r['uniform_loss'])} | {f(ratio)} | {f(r['teacher_entropy'])} | "
                     f"{f(r['teacher_batch_entropy'])} | {f(r['teacher_information'])} | {verdict} |")
    return "\n".join(lines) + "\n"


def pretrain_curves(summary_files: Sequence[str | Path], figure: str | Path, table: str | Path, *,
                    labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The ``pretrain_curves`` step: figure (png + pdf) and Markdown table of every run's final values."""
    from brainfm.report.style import save_figure

    runs = load_curves(summary_files)
    save_figure(draw_pretrain_curves(runs, labels), figure)
    rows = [final_values(r) for r in runs]
    write_text(table, _table(rows, labels))
    return rows
