"""Benchmark of frozen feature extraction: slices/s, achieved GFLOP/s and the fraction of a measured roofline.

What is measured, on the machine it runs on (CUDA when present, otherwise the CPU with
``threads`` threads):

* a matmul roofline: GFLOP/s of an ``n``-cube matmul in float32 and in bfloat16, measured in the
  same run (same threads), once up front and again right before each timing (same load), so the
  ViT numbers are compared with what this machine actually delivers rather than a datasheet;
* for each ViT (``vit_small_patch16_dinov3``, ``vit_base_patch16_dinov3``) at ``img_size`` and
  each precision (fp32, bf16 autocast): the wall time of ``forward_features`` on a batch of
  slices under ``torch.inference_mode()`` (warm-up, then timed iterations; median), i.e. the
  per-slice cost of the extractor, which dominates a real extraction;
* FLOPs per slice counted with ``torch.utils.flop_counter.FlopCounterMode`` (CPU's fused SDPA
  kernel registered with torch's own attention formula) and cross-checked with an analytic count.

Results go to ``<out_dir>/extraction.json``. Run: ``python -m brainfm.bench.extraction --out DIR``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainfm.atomic import write_json
from brainfm.bench.measure import cpu_name, load_average, timings
from brainfm.device import torch_threads
from brainfm.features.extract import autocast_context, synchronize

__all__ = ["run", "matmul_roofline", "count_flops", "analytic_vit_flops", "time_forward", "main"]

log = logging.getLogger("brainfm.bench")

DEFAULT_ARCHS = ("vit_small_patch16_dinov3", "vit_base_patch16_dinov3")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_roofline(device: torch.device, n: int, dtype: torch.dtype, iters: int = 5, seed: int = 0) -> dict[str, Any]:
    """GFLOP/s of ``a @ b`` with (n, n) operands (2 n^3 FLOPs per product), median of ``iters``."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    with torch.inference_mode():
        times = timings(lambda: torch.mm(a, b), warmup=1, iters=iters, sync=lambda: synchronize(device))
    t = statistics.median(times)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": times, "gflops": 2 * n**3 / t / 1e9}


def count_flops(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """FLOPs of one forward (``forward_features`` for encoders), by operator, via FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    aten = torch.ops.aten
    custom = {}
    cpu_sdpa = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:  # not in torch's registry: use its own SDPA formula

        def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
            return sdpa_flop_count(query_shape, key_shape, value_shape)

        custom[cpu_sdpa] = _cpu_sdpa
    counter = FlopCounterMode(display=False, custom_mapping=custom)
    fwd = model.forward_features if hasattr(model, "forward_features") else model
    with torch.inference_mode(), counter:
        fwd(x)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op}


def analytic_vit_flops(vit: nn.Module, img_size: int) -> int:
    """Independent FLOP count of a timm ViT forward on one image (multiply-add = 2 FLOPs).

    Patch-embedding convolution + every ``nn.Linear`` in the blocks applied to all tokens +
    attention (QK^T and AV: 2 x 2 N^2 D per block).
    """
    p = int(vit.patch_embed.patch_size[0])
    n_patch = (img_size // p) ** 2
    n_tok = n_patch + int(vit.num_prefix_tokens)
    conv = vit.patch_embed.proj
    flops = 2 * n_patch * conv.in_channels * p * p * conv.out_channels
    for blk in vit.blocks:
        for mod in blk.modules():
            if isinstance(mod, nn.Linear):
                flops += 2 * n_tok * mod.in_features * mod.out_features
        dim = int(vit.embed_dim)
        flops += 2 * 2 * n_tok * n_tok * dim
    return int(flops)


def time_forward(encoder: nn.Module, x: torch.Tensor, device: torch.device, precision: str,
                 warmup: int, iters: int) -> list[float]:
    """Seconds per ``forward_features`` call on batch ``x`` (inference mode; ``precision`` fp32 or bf16 autocast)."""

    def step() -> None:
        with autocast_context(device, precision):
            encoder.forward_features(x)

    with torch.inference_mode():
        return timings(step, warmup, iters, sync=lambda: synchronize(device))


def _time_pipeline(arch: str, dtype: str, dev: torch.device, img_size: int, batch_size: int,
                   overrides: dict[str, Any] | None, n_volumes: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Slices/s of extract_features end to end versus the bare forward rate of the same config."""
    import tempfile

    import numpy as np

    from brainfm.features.extract import extract_features
    from brainfm.models.vit import build_slice_encoder
    from brainfm.preprocess.store import ShardedStore, ShardWriter

    rng = np.random.default_rng(0)
    enc = build_slice_encoder(arch, img_size=img_size, arch_overrides=overrides, seed=0).freeze()
    with tempfile.TemporaryDirectory(prefix="brainfm-bench-") as tmp:
        store_dir = Path(tmp) / "store"
        with ShardWriter(store_dir, (batch_size, img_size, img_size), "volume", {"bench": True}) as w:
            for i in range(n_volumes):
                w.add({"dataset": "bench", "subject": f"s{i}", "session": "0", "modality": "T1"},
                      rng.standard_normal((batch_size, img_size, img_size)).astype(np.float32))
        # the store holds img_size slices already, so no resize: the overhead measured is reading,
        # packing, pooling and writing
        fs = extract_features(enc, ShardedStore(store_dir), Path(tmp) / "features", batch_size=batch_size,
                              device=dev, precision=dtype, progress=False)
        sps = float(fs.meta["slices_per_s"])
    bare = next(r["slices_per_s"] for r in results if r["arch"] == arch and r["dtype"] == dtype)
    return {"arch": arch, "dtype": dtype, "volumes": n_volumes, "slices_per_volume": batch_size,
            "slices_per_s": _sig(sps), "bare_forward_slices_per_s": bare, "efficiency": _sig(sps / bare)}


def _sig(x: float, digits: int = 5) -> float:
    """Round to significant digits (keeps tiny test models' numbers meaningful)."""
    return float(f"{x:.{digits}g}")


def run(out_dir: str | Path, *, device: str | None = None, threads: int | None = 2,
        archs: Sequence[str] = DEFAULT_ARCHS, dtypes: Sequence[str] = ("fp32", "bf16"), img_size: int = 256,
        batch_size: int = 16, warmup: int = 1, iters: int = 3, roofline_n: int | None = None,
        roofline_iters: int = 5, overrides: dict[str, Any] | None = None,
        pipeline_volumes: int = 2) -> dict[str, Any]:
    """Measure extraction throughput and write ``<out_dir>/extraction.json``; returns the report.

    Defaults keep the whole run around 2-3 minutes on the project's 2-core CPU. With
    ``pipeline_volumes`` > 0 the full :func:`~brainfm.features.extract.extract_features` path
    (store reads, resize, slice packing, pooling, atomic write) is also timed on a temporary
    real store of that many ``(batch_size, img_size, img_size)`` volumes with the first
    architecture and last precision, and compared with the bare forward rate. ``overrides``
    (timm constructor arguments) shrink the models, for tests only. The machine's load average
    is recorded before and after: other processes sharing the cores lower every number.
    """
    from brainfm.models.vit import build_slice_encoder

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for d in dtypes:
        if d not in _DTYPES:
            raise ValueError(f"dtype {d!r} not in {list(_DTYPES)}")
    n = roofline_n or (8192 if dev.type == "cuda" else 2048)
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads() if not threads else int(threads),
        "torch": torch.__version__,
        "img_size": int(img_size),
        "batch_size": int(batch_size),
        "warmup": int(warmup),
        "iters": int(iters),
        "overrides": dict(overrides or {}),
        "loadavg_before": load_average(),
        "what": "forward_features of a frozen slice encoder on a (batch, 3, img, img) batch, inference mode; "
                "median seconds per batch",
    }
    with torch_threads(threads if dev.type == "cpu" else None):
        report["threads"] = torch.get_num_threads()
        roof = {d: matmul_roofline(dev, n, _DTYPES[d], iters=roofline_iters) for d in dtypes}
        report["roofline"] = {d: {"n": r["n"], "gflops": _sig(r["gflops"]), "seconds": [_sig(t) for t in r["seconds"]]}
                              for d, r in roof.items()}
        results = []
        g = torch.Generator(device="cpu").manual_seed(0)
        for arch in archs:
            enc = build_slice_encoder(arch, img_size=img_size, arch_overrides=overrides, seed=0).freeze().to(dev)
            one = torch.randn(1, 3, img_size, img_size, generator=g).to(dev)
            counted = count_flops(enc, one)
            analytic = analytic_vit_flops(enc.model, img_size)
            x = torch.randn(batch_size, 3, img_size, img_size, generator=g).to(dev)
            for d in dtypes:
                # the roofline is re-measured right before each timing: on a shared machine the load
                # drifts, and the ratio is only meaningful under the same conditions
                near = matmul_roofline(dev, n, _DTYPES[d], iters=roofline_iters)["gflops"]
                times = time_forward(enc, x, dev, precision=d, warmup=warmup, iters=iters)
                t = statistics.median(times)
                sps = batch_size / t
                achieved = counted["total"] * sps / 1e9
                results.append({
                    "arch": arch, "dtype": d, "params_m": round(sum(p.numel() for p in enc.parameters()) / 1e6, 2),
                    "flops_per_slice": counted["total"],
                    "flops_per_slice_analytic": analytic,
                    "gflops_per_slice": _sig(counted["total"] / 1e9),
                    "flops_by_op": counted["by_op"],
                    "seconds_per_batch": [_sig(v) for v in times],
                    "slices_per_s": _sig(sps),
                    "achieved_gflops": _sig(achieved),
                    "roofline_gflops": _sig(near),
                    "fraction_of_roofline": _sig(achieved / near),
                })
                log.info("%s %s: %.2f slices/s, %.1f GFLOP/s (%.0f%% of %s matmul, %.0f GFLOP/s)", arch, d, sps,
                         achieved, 100 * achieved / near, d, near)
            del enc, x
        report["results"] = results
        if pipeline_volumes > 0:
            report["pipeline"] = _time_pipeline(archs[0], dtypes[-1], dev, img_size, batch_size, overrides,
                                                pipeline_volumes, results)
    report["loadavg_after"] = load_average()
    report["total_seconds"] = round(time.perf_counter() - t_start, 2)
    out = Path(out_dir) / "extraction.json"
    write_json(out, report)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory (extraction.json is written there)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (ignored on CUDA)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--archs", default=",".join(DEFAULT_ARCHS))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rep = run(a.out, device=a.device, threads=a.threads, batch_size=a.batch_size, img_size=a.img_size,
              iters=a.iters, archs=[s for s in a.archs.split(",") if s])
    for r in rep["results"]:
        print(f"{r['arch']:28s} {r['dtype']}: {r['slices_per_s']:8.2f} slices/s  {r['achieved_gflops']:8.1f} GFLOP/s  "
              f"{100 * r['fraction_of_roofline']:5.1f}% of {r['dtype']} matmul ({r['roofline_gflops']:.0f} GFLOP/s)")
    if "pipeline" in rep:
        pl = rep["pipeline"]
        print(f"extract_features end to end ({pl['arch']}, {pl['dtype']}): {pl['slices_per_s']:.2f} slices/s = "
              f"{100 * pl['efficiency']:.0f}% of the bare forward rate")
    print(f"total {rep['total_seconds']:.1f} s -> {Path(a.out) / 'extraction.json'}")


if __name__ == "__main__":
    main()
