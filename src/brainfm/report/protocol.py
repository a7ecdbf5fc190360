"""The paper's stated protocol as data, and where a run's config departs from it.

``PAPER`` lists the settings the paper states (section, value) together with how to read the
same setting from a validated run config; :func:`protocol_deviations` (rule and step of the same
name) compares the two and writes ``results/tables/protocol_deviations.md``: every deviation of
this run, then the settings the paper leaves open and the value this run takes for them (from
the public BrainDINO code where it has one, ``../shared/notes/anchors.md`` §1).

The pretraining learning rate. The paper gives "a peak base learning rate of 1e-4" for a
global batch of 4 x 256 = 1024 with DINOv3's ``sqrt_wrt_1024`` rule, lr x 4 sqrt(B / 1024).
This module takes 1e-4 as the *base* value before scaling (the word "base" and DINOv3's
configs, where ``lr`` is always the base), so the effective peak is 4e-4; the table reports both.

Only values the run's config decides are checked; the paper's n, splits, losses and baseline
inputs belong to their own modules (task specs, dataset registry entries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PaperSetting", "PAPER", "PAPER_SILENT", "check_protocol", "protocol_deviations", "format_deviations"]

MATCH, DEVIATES, NOT_RUN = "matches", "deviates", "not in this run"


@dataclass(frozen=True)
class PaperSetting:
    """One stated value of the paper and how to read the same setting from a run."""

    key: str  # the config key (or derived quantity) compared
    section: str  # where the paper states it
    paper: Any
    read: Callable[[Context], Any]  # the run's value; raises LookupError when the run has no such part
    note: str = ""


class Context:
    """The views of a run config the readers need: its values and the effective BrainDINO stages."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = values
        self._dino: list[Any] | None = None
        self._run: Mapping[str, Any] | None = None

    def get(self, dotted: str) -> Any:
        node: Any = self.values
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise LookupError(dotted)
            node = node[part]
        return node

    def dino_run(self) -> Mapping[str, Any]:
        """The config entry of the BrainDINO pretraining run (the ``dino`` recipe run the reference backbone loads)."""
        if self._run is None:
            runs = {n: r for n, r in (self.values.get("pretrain") or {}).items() if r.get("recipe") == "dino"}
            if not runs:
                raise LookupError("pretrain (dino)")
            ref = str((self.values.get("backbones") or {}).get(self.get("stats.reference"), {}).get("weights") or "")
            name = ref.split(":", 1)[1] if ref.startswith("pretrain:") and ref.split(":", 1)[1] in runs else sorted(runs)[0]
            self._run = {"name": name, **runs[name]}
        return self._run

    def dino(self, stage: int = 1) -> Any:
        """The effective :class:`~brainfm.ssl.config.DinoConfig` of stage ``stage`` (defaults filled in)."""
        if self._dino is None:
            from brainfm.config import PretrainSpec
            from brainfm.ssl.entry import dino_stage_configs

            run = {k: v for k, v in self.dino_run().items() if k != "init"}  # a weights path, not compared
            self._dino = dino_stage_configs(PretrainSpec.from_dict(run, source="protocol"))
        if stage > len(self._dino):
            raise LookupError(f"pretrain stage {stage}")
        return self._dino[stage - 1]

    def gpus(self) -> int:
        res = self.dino_run().get("resources") or {}
        return int(res.get("nproc", 1)) * int(res.get("nodes", 1))

    def task_with(self, **match: Any) -> Mapping[str, Any]:
        for t in (self.values.get("tasks") or {}).values():
            if all(t.get(k) == v for k, v in match.items()):
                return t
        raise LookupError(str(match))


def _lr_peak(c: Context, stage: int = 1) -> float:
    from brainfm.ssl.schedules import scaled_lr

    d = c.dino(stage)
    return scaled_lr(d.lr, d.batch_size * c.gpus(), d.lr_scaling)


def _grid(c: Context, kind: str) -> list[float]:
    grid = c.get("perturbations.grid")
    if kind not in grid:
        raise LookupError(f"perturbations.grid.{kind}")
    identity = {"gamma": 1.0, "gibbs": 0.0, "bias": 0.0}[kind]
    return sorted({float(v) for v in grid[kind]} | {identity})


def _segmentation(c: Context, key: str) -> Any:
    if not c.values.get("segmentation", {}).get("benchmarks"):
        raise LookupError("segmentation.benchmarks")
    return c.get(f"segmentation.{key}")


def _layers(c: Context, backbone: str) -> list[int]:
    b = (c.values.get("backbones") or {}).get(backbone)
    if b is None:
        raise LookupError(f"backbones.{backbone}")
    return list(b.get("layers") or [])


PAPER: tuple[PaperSetting, ...] = (
    # §4.1.2 preprocessing and pretraining slices
    PaperSetting("preprocess.skull_strip", "§4.1.2", "hdbet", lambda c: c.get("preprocess.skull_strip")),
    PaperSetting("preprocess.cube", "§4.1.2", 256, lambda c: c.get("preprocess.cube"), "cropped volume resized to a cube"),
    PaperSetting("preprocess.clip_percentiles", "§4.1.2", [0.5, 99.5], lambda c: list(c.get("preprocess.clip_percentiles"))),
    PaperSetting("preprocess.pretrain_slices.n", "§4.1.2", 128, lambda c: c.get("preprocess.pretrain_slices.n")),
    PaperSetting("preprocess.pretrain_slices.mu", "§4.1.2", 128, lambda c: c.get("preprocess.pretrain_slices.mu")),
    PaperSetting("preprocess.pretrain_slices.sigma", "§4.1.2", 50, lambda c: c.get("preprocess.pretrain_slices.sigma")),
    PaperSetting("preprocess.downstream_shape", "§4.3", [128, 256, 256], lambda c: list(c.get("preprocess.downstream_shape")),
                 "128 axial slices of 256 x 256 per downstream volume"),
    # §4.2 BrainDINO pretraining, stage 1
    PaperSetting("pretrain.<dino>.arch", "§4.2", "vit_base_patch16_dinov3", lambda c: c.dino().arch, "ViT-B/16, RoPE, 4 registers"),
    PaperSetting("pretrain.<dino>.arch_overrides", "§4.2", {}, lambda c: dict(c.dino().arch_overrides)),
    PaperSetting("pretrain.<dino>.global_size", "§4.2", 256, lambda c: c.dino().global_size),
    PaperSetting("pretrain.<dino>.local_size", "§4.2", 112, lambda c: c.dino().local_size),
    PaperSetting("pretrain.<dino>.n_local", "§4.2", 8, lambda c: c.dino().n_local),
    PaperSetting("pretrain.<dino>.global_scale", "§4.2", [0.32, 1.0], lambda c: list(c.dino().global_scale)),
    PaperSetting("pretrain.<dino>.local_scale", "§4.2", [0.05, 0.32], lambda c: list(c.dino().local_scale)),
    PaperSetting("pretrain.<dino>.momentum", "§4.2", 0.994, lambda c: c.dino().momentum, "fixed EMA momentum"),
    PaperSetting("pretrain.<dino>.n_prototypes", "§4.2", 65536, lambda c: c.dino().n_prototypes),
    PaperSetting("pretrain.<dino>.head_hidden", "§4.2", 2048, lambda c: c.dino().head_hidden),
    PaperSetting("pretrain.<dino>.head_bottleneck", "§4.2", 256, lambda c: c.dino().head_bottleneck),
    PaperSetting("pretrain.<dino>.mask_prob", "§4.2", 0.5, lambda c: c.dino().mask_prob),
    PaperSetting("pretrain.<dino>.mask_ratio", "§4.2", [0.1, 0.5], lambda c: list(c.dino().mask_ratio)),
    PaperSetting("pretrain.<dino>.ibot_weight", "§4.2", 1.0, lambda c: c.dino().ibot_weight, "lambda"),
    PaperSetting("pretrain.<dino>.koleo_weight", "§4.2", 0.1, lambda c: c.dino().koleo_weight),
    PaperSetting("pretrain.<dino>.clip_grad", "§4.2", 3.0, lambda c: c.dino().clip_grad),
    PaperSetting("pretrain.<dino>.layer_decay", "§4.2", 0.9, lambda c: c.dino().layer_decay),
    PaperSetting("pretrain.<dino>.iters", "§4.2", 500_000, lambda c: c.dino().iters),
    PaperSetting("pretrain.<dino>.warmup_iters", "§4.2", 10_000, lambda c: c.dino().warmup_iters),
    PaperSetting("pretrain.<dino>.batch_size", "§4.2", 256, lambda c: c.dino().batch_size, "per GPU"),
    PaperSetting("pretrain.<dino> GPUs (nproc x nodes)", "§4.2", 4, lambda c: c.gpus()),
    PaperSetting("pretrain.<dino>.lr (base)", "§4.2", 1e-4, lambda c: c.dino().lr,
                 "the paper's 'peak base learning rate of 1e-4', taken as DINOv3's base lr before scaling"),
    PaperSetting("pretrain.<dino>.lr_scaling", "§4.2", "sqrt_wrt_1024", lambda c: c.dino().lr_scaling,
                 "DINOv3's rule lr x 4 sqrt(global batch / 1024)"),
    PaperSetting("pretrain.<dino> effective peak lr", "§4.2", 4e-4, _lr_peak,
                 "1e-4 x 4 sqrt(1024 / 1024): 4 x the base at the paper's global batch of 1024"),
    PaperSetting("pretrain.<dino>.weight_decay", "§4.2", 0.04, lambda c: c.dino().weight_decay, "constant"),
    # §4.2 stage 2 (high resolution)
    PaperSetting("pretrain.<dino> stage 2", "§4.2", True, lambda c: len(c.dino_run().get("stages") or []) >= 2
                 and c.dino(2).stage == "2", "a 1024-px continuation stage"),
    PaperSetting("pretrain.<dino> stage 2 upsample_to", "§4.2", 1024, lambda c: c.dino(2).upsample_to),
    PaperSetting("pretrain.<dino> stage 2 crop_pairs", "§4.2",
                 [[512, 112], [768, 112], [768, 168], [768, 224], [768, 336]], lambda c: c.dino(2).crop_pairs),
    PaperSetting("pretrain.<dino> stage 2 crop_pair_ratios", "§4.2", [0.30, 0.30, 0.30, 0.05, 0.05],
                 lambda c: c.dino(2).crop_pair_ratios),
    PaperSetting("pretrain.<dino> stage 2 batch_size", "§4.2", 56, lambda c: c.dino(2).batch_size, "per GPU"),
    PaperSetting("pretrain.<dino> stage 2 iters", "§4.2", 10_000, lambda c: c.dino(2).iters),
    # §4.3 heads and the downstream grid
    PaperSetting("head.optimizer", "§4.3", "adam", lambda c: c.get("head.optimizer")),
    PaperSetting("head.lr", "§4.3", 1e-4, lambda c: c.get("head.lr")),
    PaperSetting("head.weight_decay", "§4.3", 1e-5, lambda c: c.get("head.weight_decay")),
    PaperSetting("ratios", "§2", [0.1, 0.2, 0.4, 0.6, 0.8, 1.0], lambda c: [float(r) for r in c.get("ratios")]),
    # §4.3.1 tumour segmentation (nnU-Net v2, frozen encoder)
    PaperSetting("segmentation.ratios", "§4.3.1", [0.1, 0.2, 0.4, 0.6, 0.8, 1.0],
                 lambda c: [float(r) for r in _segmentation(c, "ratios")]),
    PaperSetting("segmentation.epochs", "§4.3.1", 100, lambda c: _segmentation(c, "epochs")),
    PaperSetting("segmentation.iterations_per_epoch", "§4.3.1", 250,
                 lambda c: _segmentation(c, "iterations_per_epoch")),
    PaperSetting("segmentation.val_iterations_per_epoch", "§4.3.1", 50,
                 lambda c: _segmentation(c, "val_iterations_per_epoch")),
    # §4.5 perturbations
    PaperSetting("perturbations.grid.gamma", "§4.5", [0.5, 0.8, 1.0, 1.2, 1.5, 2.0], lambda c: _grid(c, "gamma")),
    PaperSetting("perturbations.grid.gibbs", "§4.5", [0.0, 0.1, 0.2, 0.3, 0.4], lambda c: _grid(c, "gibbs")),
    PaperSetting("perturbations.grid.bias", "§4.5", [0.0, 0.1, 0.2, 0.3, 0.4], lambda c: _grid(c, "bias")),
    PaperSetting("perturbations.backbones", "§4.5", ["bmmae", "braindino", "brainiac", "brainmvp"],
                 lambda c: sorted(c.get("perturbations.backbones")) if c.get("perturbations.tasks") else [],
                 "the four MRI-pretrained encoders; DINOv3 is left out"),
    # §4.6 representation analyses
    PaperSetting("kNN k (knn tasks)", "§4.6", [1, 3, 5, 10, 20, 50],
                 lambda c: sorted({int(k) for t in c.values["tasks"].values() if t.get("kind") == "knn"
                                   for k in t.get("ks") or ()}) or _missing("knn tasks")),
    PaperSetting("backbones.braindino.layers (CKA depths)", "§4.6", [2, 6, 11], lambda c: _layers(c, "braindino"),
                 "early / mid / late blocks"),
    # §4.7 statistics
    PaperSetting("stats.n_boot", "§4.7", 2000, lambda c: c.get("stats.n_boot")),
    PaperSetting("stats.seed", "§4.7", 42, lambda c: c.get("stats.seed")),
    PaperSetting("stats.alpha", "§4.7", 0.05, lambda c: c.get("stats.alpha")),
    PaperSetting("stats.reference", "§4.7", "braindino", lambda c: c.get("stats.reference")),
)

#: Settings the paper leaves open: the value this project takes and where it comes from.
PAPER_SILENT: tuple[tuple[str, str, Callable[[Context], Any]], ...] = (
    ("head.batch_size / max_epochs / patience", "public code: batch 4, 8 epochs, early-stop patience 4; "
     "this project trains longer with early stopping on the validation subjects",
     lambda c: [c.get("head.batch_size"), c.get("head.max_epochs"), c.get("head.patience")]),
    ("seeds", "the paper reports seed-level spread without the count", lambda c: list(c.get("seeds"))),
    ("regression head of days post stroke: optimizer, lr, weight decay", "public code: AdamW 1e-3, wd 1e-4",
     lambda c: [(t := c.task_with(loss="atlas_mixed"))["head"]["optimizer"], t["head"]["lr"],
                t["head"]["weight_decay"]]),
    ("pretrain.<dino>.centering", "DINOv3 default (Sinkhorn-Knopp); the paper says 'centered'",
     lambda c: c.dino().centering),
    ("pretrain.<dino>.teacher_temp warmup", "DINOv3 default (0.04 -> 0.07 over 37,500 iterations)",
     lambda c: [c.dino().teacher_temp_warmup, c.dino().teacher_temp, c.dino().teacher_temp_warmup_iters]),
    ("pretrain.<dino>.drop_path_rate", "public downstream code's vit_base(drop_path_rate=0.2)",
     lambda c: c.dino().drop_path_rate),
    ("pretrain.<dino> stage 2 warmup_iters", "none: stage 2 continues stage 1's schedule", lambda c: c.dino(2).warmup_iters),
    ("segmentation.encoder_lr (Supp. Table 6, fine-tuned encoder)", "public BrainDINO_seg code: the ViT's AdamW "
     "group at 3e-5 beside the decoder's 3e-4", lambda c: _segmentation(c, "encoder_lr")),
)


def _missing(what: str) -> Any:
    raise LookupError(what)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def check_protocol(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per paper setting: key, section, paper, run, status (matches | deviates | not in this run), note."""
    ctx = Context(values)
    rows = []
    for s in PAPER:
        try:
            run = s.read(ctx)
        except LookupError:
            rows.append({"key": s.key, "section": s.section, "paper": s.paper, "run": None, "status": NOT_RUN,
                         "note": s.note})
            continue
        rows.append({"key": s.key, "section": s.section, "paper": s.paper, "run": run,
                     "status": MATCH if _same(s.paper, run) else DEVIATES, "note": s.note})
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}" if v else "{}"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_deviations(values: Mapping[str, Any], source: str) -> str:
    """The Markdown document: deviations, settings not in this run, settings the paper leaves open, matches."""
    rows = check_protocol(values)
    ctx = Context(values)
    dev = [r for r in rows if r["status"] == DEVIATES]
    absent = [r for r in rows if r["status"] == NOT_RUN]
    ok = [r for r in rows if r["status"] == MATCH]
    out = [f"# Protocol deviations of `{source}` (run `{values.get('run_name', '')}`)", "",
           f"{len(dev)} deviation(s) from the paper's stated protocol among {len(rows)} checked settings; "
           f"{len(ok)} match, {len(absent)} are not part of this run. Generated by `brainfm protocol-deviations` "
           "from `brainfm.report.protocol.PAPER`.", "",
           "The paper's pretraining learning rate \"1e-4\" is read as DINOv3's *base* learning rate; with the "
           "`sqrt_wrt_1024` rule at the paper's global batch of 1024 (4 GPUs x 256) the effective peak is "
           "4 x 1e-4 = 4e-4.", ""]
    out += ["## Deviations", ""]
    if dev:
        out += ["| setting | paper (§) | this run | note |", "|---|---|---|---|"]
        out += [f"| `{_cell(r['key'])}` | {_cell(_fmt(r['paper']))} ({r['section']}) | {_cell(_fmt(r['run']))} | "
                f"{_cell(r['note'])} |" for r in dev]
    else:
        out.append("None: every checked setting is the paper's.")
    out += ["", "## Not part of this run", ""]
    out += [f"- `{r['key']}` (paper: {_fmt(r['paper'])}, {r['section']})" for r in absent] or ["None."]
    out += ["", "## Settings the paper leaves open", "", "| setting | this run | where the value comes from |",
            "|---|---|---|"]
    for key, why, read in PAPER_SILENT:
        try:
            value = _fmt(read(ctx))
        except LookupError:
            value = "not in this run"
        out.append(f"| `{_cell(key)}` | {_cell(value)} | {_cell(why)} |")
    out += ["", "## Matching the paper", ""]
    out += [f"- `{r['key']}` = {_fmt(r['run'])} ({r['section']})" for r in ok] or ["None."]
    return "\n".join(out) + "\n"


def protocol_deviations(values: Mapping[str, Any], out: str | Path, *, source: str = "config") -> list[dict[str, Any]]:
    """The ``protocol_deviations`` step: write the deviations document of a (validated) config's values."""
    from brainfm.atomic import write_text

    write_text(out, format_deviations(values, source))
    return [r for r in check_protocol(values) if r["status"] == DEVIATES]
