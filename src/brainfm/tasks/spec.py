"""Task specifications: what a downstream task predicts, from which images, under which protocol.

A :class:`TaskSpec` is plain data read from the ``tasks:`` section of the config (validated by
the workflow's JSON schema); nothing about a task is hard-coded in rules or runners.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brainfm.errors import ConfigError

__all__ = ["TaskSpec", "SplitSpec", "KINDS"]

KINDS = ("classification", "regression", "survival", "knn")
_DEFAULT_LOSS = {"classification": "ce", "regression": "mse", "survival": "cox", "knn": "none"}
_DEFAULT_METRICS = {
    "classification": ["auc", "accuracy", "balanced_accuracy"],
    "regression": ["mae", "mse", "rmse", "r2"],
    "survival": ["cindex"],
    "knn": ["accuracy"],
}


@dataclass(frozen=True)
class SplitSpec:
    """How subjects are partitioned: a fixed/random hold-out, or subject-disjoint K-fold CV."""

    type: str = "holdout"  # "holdout" | "cv"
    test_fraction: float = 0.2  # used when the manifest has no fixed split
    n_splits: int = 5
    val_fraction: float = 0.15
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SplitSpec:
        d = dict(d or {})
        if d.get("type", "holdout") not in ("holdout", "cv"):
            raise ConfigError(f"split type must be 'holdout' or 'cv', got {d.get('type')!r}")
        return cls(**d)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    dataset: str
    kind: str
    target: str
    modalities: tuple[str, ...] = ("T1",)
    classes: tuple[Any, ...] = ()
    class_names: tuple[str, ...] = ()
    binarize: dict[str, Any] | None = None  # {"threshold": 365, "above": 0, "at_or_below": 1}
    query: str | None = None  # pandas query selecting rows, e.g. paper exclusions
    features: str = "cls"  # "cls" | "patch_central"
    unit: str = "session"  # "session": modalities fused per (subject, session); "image": one sample per image
    target_transform: str = "none"  # "none" | "log1p"
    loss: str = ""
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)  # overrides of the global head settings
    smote: bool = False
    split: SplitSpec = field(default_factory=SplitSpec)
    stratify: str | None = None
    metrics: tuple[str, ...] = ()
    ratios: tuple[float, ...] = ()
    seeds: tuple[int, ...] = ()
    strata: dict[str, Any] | None = None  # {"column": "age", "edges": [...]}
    ks: tuple[int, ...] = (1, 3, 5, 10, 20, 50)  # kNN only
    description: str = ""

    @classmethod
    def from_config(cls, name: str, d: dict[str, Any], defaults: dict[str, Any] | None = None) -> TaskSpec:
        d = dict(d)
        defaults = defaults or {}
        kind = d.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"task {name}: kind must be one of {KINDS}, got {kind!r}")
        for key in ("dataset", "target"):
            if not d.get(key):
                raise ConfigError(f"task {name}: '{key}' is required")
        classes = tuple(d.get("classes", ()))
        if kind in ("classification", "knn") and not classes and not d.get("binarize"):
            raise ConfigError(f"task {name}: classification needs 'classes' (label values in order) or 'binarize'")
        if d.get("binarize") and not classes:
            classes = (0, 1)
        spec = cls(
            name=name,
            dataset=d["dataset"],
            kind=kind,
            target=d["target"],
            modalities=tuple(d.get("modalities", ("T1",))),
            classes=classes,
            class_names=tuple(str(c) for c in d.get("class_names", classes)),
            binarize=d.get("binarize"),
            query=d.get("query"),
            features=d.get("features", "cls"),
            unit=d.get("unit", "image" if d["target"] == "modality" else "session"),
            target_transform=d.get("target_transform", "none"),
            loss=d.get("loss") or _DEFAULT_LOSS[kind],
            loss_kwargs=dict(d.get("loss_kwargs", {})),
            head=dict(d.get("head", {})),
            smote=bool(d.get("smote", False)),
            split=SplitSpec.from_dict(d.get("split")),
            stratify=d.get("stratify", d["target"] if kind in ("classification", "knn") else None),
            metrics=tuple(d.get("metrics") or _DEFAULT_METRICS[kind]),
            ratios=tuple(float(r) for r in d.get("ratios", defaults.get("ratios", (1.0,)))),
            seeds=tuple(int(s) for s in d.get("seeds", defaults.get("seeds", (0,)))),
            strata=d.get("strata"),
            ks=tuple(int(k) for k in d.get("ks", (1, 3, 5, 10, 20, 50))),
            description=d.get("description", ""),
        )
        if spec.features not in ("cls", "patch_central"):
            raise ConfigError(f"task {name}: features must be 'cls' or 'patch_central'")
        if spec.unit not in ("session", "image"):
            raise ConfigError(f"task {name}: unit must be 'session' or 'image'")
        if spec.target_transform not in ("none", "log1p"):
            raise ConfigError(f"task {name}: target_transform must be 'none' or 'log1p'")
        return spec

    @property
    def n_out(self) -> int:
        return len(self.classes) if self.kind == "classification" else 1
