"""Speed benchmark of the vectorised bootstrap (``make bench`` / ``brainfm bench``).

The paper's protocol runs a 2,000-resample paired bootstrap for every backbone x task x ratio;
this records how long one such test takes so regressions in the vectorised kernels show up.
Each case is timed ``repeats`` times after one warm-up call; the median and minimum are kept.
Run: ``python -m brainfm.bench.stats --out DIR`` (writes ``DIR/stats.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from brainfm.atomic import write_json
from brainfm.bench.measure import machine_info, summarize_timings, timings
from brainfm.stats.bootstrap import paired_bootstrap

__all__ = ["run", "main"]


def run(out_dir: str | Path, *, n: int = 1000, n_classes: int = 3, n_boot: int = 2000,
        repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Time paired bootstraps (macro-AUC, binary AUC, C-index, MAE) and write ``<out_dir>/stats.json``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits_a = rng.normal(size=(n, n_classes)) + 1.0 * np.eye(n_classes)[y]
    logits_b = logits_a + rng.normal(size=(n, n_classes))
    pa = np.exp(logits_a) / np.exp(logits_a).sum(1, keepdims=True)
    pb = np.exp(logits_b) / np.exp(logits_b).sum(1, keepdims=True)
    yb = (y == 0).astype(int)
    time_ = rng.exponential(500, n)
    event = rng.integers(0, 2, n)
    target = rng.normal(50, 10, n)
    cases = {
        "paired_bootstrap_macro_auc": lambda: paired_bootstrap(y, pa, pb, "macro_auc", n_boot=n_boot),
        "paired_bootstrap_binary_auc": lambda: paired_bootstrap(yb, pa[:, 0], pb[:, 0], "auc", n_boot=n_boot),
        "paired_bootstrap_cindex": lambda: paired_bootstrap((time_, event), pa[:, 0], pb[:, 0], "cindex",
                                                            n_boot=n_boot),
        "paired_bootstrap_mae": lambda: paired_bootstrap(target, target + pa[:, 0] * 10, target + pb[:, 0] * 10,
                                                         "mae", n_boot=n_boot),
    }
    results = {name: {"n": n, "n_boot": n_boot, **({"n_classes": n_classes} if "macro" in name else {}),
                      **summarize_timings(timings(fn, warmup=1, iters=repeats))} for name, fn in cases.items()}
    report = {"benchmark": "brainfm.stats", "results": results, "machine": machine_info()}
    write_json(Path(out_dir) / "stats.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m brainfm.bench.stats --out DIR`` writes ``DIR/stats.json`` and prints a summary."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m brainfm.bench.stats", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench", help="output directory (stats.json is written there)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    report = run(args.out, n=args.n, n_boot=args.n_boot, repeats=args.repeats)
    for name, r in report["results"].items():
        print(f"{name}: median {r['seconds_median']:.3f} s (min {r['seconds_min']:.3f} s), "
              f"n={r['n']}, n_boot={r['n_boot']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
