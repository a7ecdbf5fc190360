"""Tumour segmentation through nnU-Net v2 on frozen encoders (paper §2.1, §4.3.1).

The grid is benchmarks x backbones x ratios x seeds, one training job per cell. Each backbone
names the nnU-Net configuration it trains in (``2d_<P>`` for slice encoders, ``3d_<P>`` for the
volumetric baselines); a benchmark prepares the union of its backbones' configurations once.
Ratios and seeds default to the top-level ones (resolved by :class:`~brainfm.config.Config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brainfm.config.spec import Spec, as_json

__all__ = ["SegmentationSpec", "SegmentationBackbone", "JOB_KEYS"]

#: the settings a training job depends on (its rule parameter): changing anything else (another
#: benchmark, a figure option) does not rerun finished cells
JOB_KEYS = ("fold", "epochs", "iterations_per_epoch", "val_iterations_per_epoch", "use_mirroring", "plot_progress",
            "keep_checkpoint", "threads", "augmentation_workers")


@dataclass(frozen=True)
class SegmentationBackbone:
    """How one backbone is trained for segmentation: its nnU-Net configuration and decoder inputs."""

    configuration: str
    blocks: tuple[int, ...] | None = None
    decoder: dict[str, Any] = field(default_factory=dict)

    @property
    def dims(self) -> int:
        return 2 if self.configuration.startswith("2d_") else 3


@dataclass(frozen=True)
class SegmentationSpec(Spec):
    definition = "segmentation"

    benchmarks: tuple[str, ...]
    backbones: dict[str, SegmentationBackbone]
    ratios: tuple[float, ...]  # resolved: the top-level ratios when the section gives none
    seeds: tuple[int, ...]
    fold: int | str
    test_fraction: float | None
    batch_sizes: dict[str, int]
    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    use_mirroring: bool
    plot_progress: bool
    keep_checkpoint: bool
    all_background: bool
    adjust: str
    figure_cases: int
    perturbation_benchmarks: tuple[str, ...]
    finetune: bool  # Supp. Table 6 rows (cells: brainfm.config.Config.segmentation_finetune_cells)
    encoder_lr: float
    threads: int
    augmentation_workers: int
    processes: int
    resources: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _build(cls, d: dict[str, Any], *, name: str | None, source: str, where: str) -> SegmentationSpec:
        backbones = {n: SegmentationBackbone(b["configuration"],
                                             tuple(b["blocks"]) if b.get("blocks") is not None else None,
                                             dict(b.get("decoder", {})))
                     for n, b in d["backbones"].items()}
        return cls(benchmarks=tuple(d["benchmarks"]), backbones=backbones,
                   ratios=tuple(float(r) for r in d.get("ratios", ())), seeds=tuple(int(s) for s in d.get("seeds", ())),
                   fold=d["fold"], test_fraction=None if d["test_fraction"] is None else float(d["test_fraction"]),
                   batch_sizes={str(k): int(v) for k, v in d["batch_sizes"].items()}, epochs=int(d["epochs"]),
                   iterations_per_epoch=int(d["iterations_per_epoch"]),
                   val_iterations_per_epoch=int(d["val_iterations_per_epoch"]), use_mirroring=bool(d["use_mirroring"]),
                   plot_progress=bool(d["plot_progress"]), keep_checkpoint=bool(d["keep_checkpoint"]),
                   all_background=bool(d["all_background"]), adjust=str(d["adjust"]),
                   figure_cases=int(d["figure_cases"]),
                   perturbation_benchmarks=tuple(d["perturbation_benchmarks"]), finetune=bool(d["finetune"]),
                   encoder_lr=float(d["encoder_lr"]), threads=int(d["threads"]),
                   augmentation_workers=int(d["augmentation_workers"]), processes=int(d["processes"]),
                   resources=dict(d["resources"]))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["backbones"] = {n: {"configuration": b.configuration, "blocks": list(b.blocks) if b.blocks else None,
                                "decoder": dict(b.decoder)} for n, b in self.backbones.items()}
        return out

    # ------------------------------------------------------------------ views for the workflow
    @property
    def enabled(self) -> bool:
        return bool(self.benchmarks and self.backbones)

    def configurations(self) -> list[str]:
        """The nnU-Net configurations every benchmark prepares (one per distinct backbone setting)."""
        return sorted({b.configuration for b in self.backbones.values()})

    def prepare_json(self) -> str:
        """What preparing a benchmark depends on besides its configurations (its rule parameter)."""
        configurations = self.configurations()
        return as_json({"batch_sizes": {c: n for c, n in self.batch_sizes.items() if c in configurations},
                        "test_fraction": self.test_fraction, "processes": self.processes})

    def job_json(self) -> str:
        """The training settings of one job (its rule parameter): the section limited to :data:`JOB_KEYS`."""
        return as_json({k: getattr(self, k) for k in JOB_KEYS})

    def finetune_job_json(self) -> str:
        """A full fine-tuning job's settings: :meth:`job_json`'s and the encoder's learning rate."""
        return as_json({**{k: getattr(self, k) for k in JOB_KEYS}, "encoder_lr": self.encoder_lr})

    def backbone_json(self, backbone: str) -> str:
        b = self.backbones[backbone]
        return as_json({"configuration": b.configuration, "blocks": list(b.blocks) if b.blocks else None,
                        "decoder": dict(b.decoder)})

    def train_settings(self, *, finetune: bool = False) -> dict[str, Any]:
        """Fields of :class:`brainfm.segmentation.trainer.TrainSettings` this section sets (``finetune``:
        with the encoder trained at ``encoder_lr``)."""
        out = {"num_epochs": self.epochs, "iterations_per_epoch": self.iterations_per_epoch,
               "val_iterations_per_epoch": self.val_iterations_per_epoch, "plot_progress": self.plot_progress}
        return {**out, "encoder_lr": self.encoder_lr} if finetune else out

    def cells(self) -> list[tuple[str, str, float, int]]:
        """Every (benchmark, backbone, ratio, seed) training job."""
        return [(bm, b, r, s) for bm in self.benchmarks for b in self.backbones for r in self.ratios
                for s in self.seeds]
