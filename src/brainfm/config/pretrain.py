"""Self-supervised pretraining runs and the three recipes they can use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brainfm.config.spec import Spec

__all__ = ["Recipe", "RECIPES", "PretrainSpec"]


@dataclass(frozen=True)
class Recipe:
    """A pretraining recipe: the encoder its weights load into, and the store it streams."""

    name: str
    encoder: str  # brainfm.models registry name of the exported weights (and of an ``init`` file)
    product: str  # "pretrain": the N(mu, sigma) slice store; "downstream": uniformly resampled volumes
    description: str


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("dino", "braindino", "pretrain", "BrainDINO: DINOv3-style DINO + iBOT + KoLeo on axial slices"),
    Recipe("simclr", "brainiac_simclr", "downstream", "BrainIAC recipe: SimCLR on 3D volumes (ResNet)"),
    Recipe("brainfound", "brainfound", "downstream", "BrainFound recipe: DINOv2 continued on stacked slices"),
)}


@dataclass(frozen=True)
class PretrainSpec(Spec):
    """One pretraining run; ``init`` is resolved to a concrete weights file (or none)."""

    definition = "pretrain_run"
    named = True

    name: str
    recipe: str
    datasets: tuple[str, ...]
    params: dict[str, Any]
    resources: dict[str, Any]
    threads: int  # Snakemake threads of the job (the schema gives the default)
    stages: tuple[dict[str, Any], ...] = ()
    init: str | None = None
    # the run whose output ``init`` is; known to the workflow's DAG, not part of the JSON
    init_run: str | None = field(default=None, metadata={"json": False})

    @property
    def recipe_info(self) -> Recipe:
        return RECIPES[self.recipe]

    @property
    def nproc(self) -> int:
        """Processes per node."""
        return int(self.resources["nproc"])

    @property
    def nnodes(self) -> int:
        return int(self.resources["nodes"])
