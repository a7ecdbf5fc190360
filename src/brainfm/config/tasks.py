"""Downstream tasks: what a task predicts, from which images, under which protocol.

A :class:`TaskSpec` is a ``tasks.<name>`` entry of the config with the run-wide values it
inherits already filled in (label ratios, seeds, the head settings merged with the task's own
overrides, the backbones it runs on), so the spec handed to a command is complete on its own.
Defaults that depend on another key (the loss and metrics of a kind, the unit of a sequence
task) are derived here; every other default is in the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from brainfm.config.schema import load_schema, validate
from brainfm.config.spec import Spec
from brainfm.errors import ConfigError

__all__ = ["KINDS", "HeadSpec", "SplitSpec", "TaskSpec", "run_defaults"]

KINDS = ("classification", "regression", "survival", "knn")
_DEFAULT_LOSS = {"classification": "ce", "regression": "mse", "survival": "cox", "knn": "none"}
_DEFAULT_METRICS = {
    "classification": ("auc", "accuracy", "balanced_accuracy"),
    "regression": ("mae", "mse", "rmse", "r2"),
    "survival": ("cindex",),
    "knn": ("accuracy",),
}


def run_defaults() -> dict[str, Any]:
    """The run-wide values a task inherits when a caller gives none (the schema's defaults)."""
    props = load_schema()["properties"]
    return {"ratios": props["ratios"]["default"], "seeds": props["seeds"]["default"], "head": {},
            "validation": props["validation"]["default"]}


@dataclass(frozen=True)
class HeadSpec(Spec):
    """LayerNorm-Linear-GELU-Linear head settings (paper §4.3); defaults in the schema."""

    definition = "head"

    hidden: int | None
    dropout: float
    optimizer: str
    lr: float
    weight_decay: float
    batch_size: int | None
    max_epochs: int
    patience: int
    standardize_target: bool
    standardize_features: bool


@dataclass(frozen=True)
class SplitSpec:
    """How subjects are partitioned: a fixed/random hold-out, or subject-disjoint K-fold CV."""

    type: str
    test_fraction: float
    n_splits: int
    val_fraction: float
    seed: int
    validation: str  # "carve_out" | "separate" (brainfm.data.splits.validation_split)
    n_test: int | None = None


@dataclass(frozen=True)
class TaskSpec(Spec):
    definition = "task"
    named = True

    name: str
    dataset: str
    kind: str
    target: str
    modalities: tuple[str, ...]
    classes: tuple[Any, ...]
    class_names: tuple[str, ...]
    binarize: dict[str, Any] | None
    query: str | None
    features: str  # "cls" | "patch_central"
    unit: str  # "session": modalities fused per (subject, session); "image": one sample per image
    target_transform: str  # "none" | "log1p"
    loss: str
    loss_kwargs: dict[str, Any]
    head: HeadSpec
    smote: bool
    split: SplitSpec
    stratify: str | None
    metrics: tuple[str, ...]
    ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    strata: dict[str, Any] | None
    ks: tuple[int, ...]
    backbones: tuple[str, ...]
    description: str
    paper_n: dict[str, int] | None = None
    split_from: str | None = None
    split_reference: dict[str, Any] | None = None  # the split_from task's spec, resolved by brainfm.config

    @classmethod
    def from_config(cls, name: str, section: Mapping[str, Any], inherited: Mapping[str, Any] | None = None, *,
                    backbones: tuple[str, ...] = (), source: str = "config") -> TaskSpec:
        """A ``tasks.<name>`` section plus what it inherits: ``ratios``, ``seeds``, ``head``, ``validation``."""
        inherited = {**run_defaults(), **(inherited or {})}
        d = dict(section)
        d["split"] = {"validation": inherited["validation"], **dict(d.get("split") or {})}
        d.setdefault("ratios", inherited["ratios"])
        d.setdefault("seeds", inherited["seeds"])
        d["head"] = {**validate(dict(inherited["head"]), definition="head", source=source, where="head"),
                     **dict(d.get("head") or {})}
        d.setdefault("backbones", list(backbones))
        return cls.from_dict({"name": name, **d}, source=source, where=f"tasks.{name}")

    @classmethod
    def _build(cls, d: dict[str, Any], *, name: str | None, source: str, where: str) -> TaskSpec:
        kind = d["kind"]
        classes = tuple(d.get("classes") or ())
        if kind in ("classification", "knn") and not classes and not d.get("binarize"):
            raise ConfigError(f"{source}: {where}: classification needs 'classes' (label values in order) or 'binarize'")
        if d.get("binarize") and not classes:
            classes = (0, 1)
        head = validate(dict(d["head"]), definition="head", source=source, where=f"{where}.head")
        for key in ("ratios", "seeds"):
            if key not in d:
                raise ConfigError(f"{source}: {where}: '{key}' is required (inherited from the run when read from a config)")
        return cls(
            name=name, dataset=d["dataset"], kind=kind, target=d["target"],
            modalities=tuple(d["modalities"]), classes=classes,
            class_names=tuple(str(c) for c in d.get("class_names", classes)),
            binarize=d.get("binarize"), query=d["query"], features=d["features"],
            unit=d.get("unit", "image" if d["target"] == "modality" else "session"),
            target_transform=d["target_transform"], loss=d.get("loss") or _DEFAULT_LOSS[kind],
            loss_kwargs=dict(d["loss_kwargs"]), head=HeadSpec._build(head, name=None, source=source, where=where),
            smote=bool(d["smote"]), split=SplitSpec(**{"validation": run_defaults()["validation"], **d["split"]}),
            stratify=d.get("stratify", d["target"] if kind in ("classification", "knn") else None),
            metrics=tuple(d.get("metrics") or _DEFAULT_METRICS[kind]),
            ratios=tuple(float(r) for r in d["ratios"]), seeds=tuple(int(s) for s in d["seeds"]),
            strata=d["strata"], ks=tuple(int(k) for k in d["ks"]), backbones=tuple(d.get("backbones") or ()),
            description=d["description"], paper_n=dict(d["paper_n"]) if d.get("paper_n") else None,
            split_from=d.get("split_from"), split_reference=d.get("split_reference"),
        )

    @property
    def n_out(self) -> int:
        return len(self.classes) if self.kind == "classification" else 1

    @property
    def is_knn(self) -> bool:
        return self.kind == "knn"
