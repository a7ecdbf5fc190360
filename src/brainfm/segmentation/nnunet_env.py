"""Where nnU-Net reads and writes: set by brainfm for the duration of a call, never by the user.

nnU-Net v2 finds its three folders through the environment variables ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` (read lazily since 2.7, at each use). brainfm keeps
one tree per benchmark under a results directory the caller chooses, points the variables at it
inside :func:`nnunet_environment` only, and restores whatever was there before, so a user's own
nnU-Net setup is neither needed nor disturbed. The same context fixes the process counts that
nnU-Net would otherwise take from a hostname table (data augmentation workers) and turns
``torch.compile`` off unless asked for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NnunetTree", "nnunet_environment", "DATASET_ID"]

#: every benchmark tree holds exactly one nnU-Net dataset, so its id never collides
DATASET_ID = 1


@dataclass(frozen=True)
class NnunetTree:
    """The three nnU-Net folders of one benchmark (``results`` may be a job's own folder)."""

    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def under(cls, root: str | Path, results: str | Path | None = None) -> NnunetTree:
        root = Path(root).resolve()
        return cls(root / "nnUNet_raw", root / "nnUNet_preprocessed",
                   Path(results).resolve() if results is not None else root / "nnUNet_results")

    def with_results(self, results: str | Path) -> NnunetTree:
        return NnunetTree(self.raw, self.preprocessed, Path(results).resolve())


@contextlib.contextmanager
def nnunet_environment(tree: NnunetTree, *, augmentation_workers: int = 0, compile_network: bool = False,
                       processes: int = 1) -> Iterator[NnunetTree]:
    """Point nnU-Net at ``tree`` (creating its folders) for the duration of the block.

    ``augmentation_workers`` = 0 runs nnU-Net's data augmentation in the training process
    (``SingleThreadedAugmenter``), right for a 2-core laptop; GPUs want several. ``processes``
    bounds nnU-Net's default pool size for work that does not take an explicit count.
    """
    values = {
        "nnUNet_raw": str(tree.raw),
        "nnUNet_preprocessed": str(tree.preprocessed),
        "nnUNet_results": str(tree.results),
        "nnUNet_n_proc_DA": str(int(augmentation_workers)),
        "nnUNet_compile": "true" if compile_network else "false",
        "nnUNet_def_n_proc": str(max(1, int(processes))),
    }
    for key in ("raw", "preprocessed", "results"):
        getattr(tree, key).mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield tree
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
