"""Resume checkpoints of a pretraining run, kept in ``work_dir/ckpt`` outside the declared outputs.

A checkpoint holds everything needed to continue bit-for-bit: student, teacher and heads (the
recipe's ``state_dict``, including loss centres), the optimizer, the iteration and the stream
position of the data, the RNG states of every process, and the config that shaped the model.
Files are written atomically (a killed job leaves the previous checkpoint intact) and only the
newest ``keep`` are kept. Loading uses ``torch.load(weights_only=True)``; an unreadable file or
one written for another architecture raises :class:`~brainfm.errors.CheckpointError` naming it.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainfm.atomic import save_torch
from brainfm.errors import CheckpointError

__all__ = [
    "FORMAT",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng",
    "restore_rng",
    "check_compatible",
    "load_state_strict",
]

FORMAT = "brainfm-ssl-resume/1"
_NAME = re.compile(r"^iter-(\d{8})\.pt$")


def checkpoint_path(ckpt_dir: Path, iteration: int) -> Path:
    return Path(ckpt_dir) / f"iter-{iteration:08d}.pt"


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def capture_rng() -> dict[str, Any]:
    """RNG states of this process in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": _py_state_to_tensor(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state_to_tensor(st: tuple) -> dict[str, Any]:
    version, internal, gauss = st
    return {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": None if gauss is None else float(gauss)}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(ckpt_dir: Path, iteration: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``iter-XXXXXXXX.pt`` atomically and prune older checkpoints beyond ``keep``."""
    path = checkpoint_path(ckpt_dir, iteration)
    save_torch(path, {"format": FORMAT, "iteration": int(iteration), **payload})
    for _, old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a resume checkpoint; unreadable or foreign files raise CheckpointError."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(path, "file not found") from exc
    except Exception as exc:  # pickle/zip errors of a truncated or corrupt file
        raise CheckpointError(path, f"cannot be read (corrupt or not a torch checkpoint: {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to restart "
                                    "from the previous checkpoint") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(path, f"not a brainfm pretraining checkpoint (expected format {FORMAT!r})")
    return obj


def check_compatible(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume when any architecture-defining setting differs."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r} != config {current.get(k)!r}"
             for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if diffs:
        raise CheckpointError(path, "written for another architecture/recipe: " + "; ".join(diffs[:10]))


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``load_state_dict(strict=True)`` with a CheckpointError listing up to 10 offending keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:10]}" + (f" (+{len(missing) - 10})" if len(missing) > 10 else ""))
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:10]}"
                         + (f" (+{len(unexpected) - 10})" if len(unexpected) > 10 else ""))
        if shape:
            parts.append(f"shape mismatches {shape[:10]}")
        raise CheckpointError(path, f"{what} does not match this architecture: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)
