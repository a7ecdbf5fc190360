"""Dataset-level driver: manifest rows -> validated volumes -> paper protocol -> sharded stores.

``preprocess_dataset`` runs every manifest row through :func:`brainfm.data.nifti.load_volume`,
optional test-time perturbation (:mod:`brainfm.perturb`), skull stripping, the protocol of
:func:`process_volume`, and appends the results to

* ``out_dir/downstream/``        volume store, items (D, H, W) = ``downstream_shape``
* ``out_dir/downstream_masks/``  label store on the same grid (nearest neighbour), if the manifest
                                 has a ``mask_path`` column and the downstream product is asked
* ``out_dir/pretrain/``          slice store, items (cube, cube), ``slice_index`` and ``blank`` keys
* ``out_dir/quarantine.csv``     inputs that failed validation, with the reason (the run continues)
* ``out_dir/fingerprints.parquet`` one image fingerprint per volume (:mod:`brainfm.preprocess.fingerprint`),
                                 computed on the loaded scan before any perturbation, for leakage checks
* ``out_dir/report.json``        counts, timings, protocol; written last (the workflow's sentinel)

Rows are written in manifest order whatever ``n_jobs`` (results are consumed in order from a
bounded window of worker processes), so stores are identical for any ``n_jobs``. A killed run
resumes: the stores keep their complete shards, and rows already present in every requested store
are skipped; a volume whose slices were only partly committed gets exactly its missing slices
(slice sampling is seeded per volume, so they are the same slices).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import math
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from brainfm.atomic import atomic_open, write_json
from brainfm.config import PRODUCTS, PerturbationSetting, ProtocolSpec, canonical_kind
from brainfm.data.nifti import Volume, load_mask, load_volume
from brainfm.device import resolve_device
from brainfm.errors import ConfigError, InputError, ManifestError
from brainfm.frames import read_frame
from brainfm.preprocess.fingerprint import FINGERPRINT_FILE, image_fingerprint
from brainfm.preprocess.skullstrip import STRIPPERS, get_skull_stripper, skull_strip
from brainfm.preprocess.slices import blank_flags, sample_slice_indices, stable_seed, volume_rng
from brainfm.preprocess.store import ShardWriter
from brainfm.preprocess.volume import crop_to_bbox, normalize_intensity, resize, to_dhw

__all__ = ["preprocess", "PRODUCTS", "KEY_COLUMNS", "resolve_protocol", "process_volume", "preprocess_dataset",
           "projected_store_bytes"]

log = logging.getLogger(__name__)

KEY_COLUMNS = ("dataset", "subject", "session", "modality")
QUARANTINE_COLUMNS = ("path", "dataset", "subject", "session", "modality", "reason")


def resolve_protocol(protocol: Mapping[str, Any] | None) -> dict[str, Any]:
    """The protocol with the paper's defaults filled in and checked (see :class:`brainfm.config.ProtocolSpec`)."""
    return ProtocolSpec.from_dict(dict(protocol or {}), source="preprocess protocol").as_mapping()


def _resolve_perturbation(perturbation: Any, seed: int) -> dict[str, Any] | None:
    if perturbation is None:
        return None
    if isinstance(perturbation, Mapping):
        p = dict(perturbation)
    elif isinstance(perturbation, Sequence) and not isinstance(perturbation, str) and len(perturbation) in (2, 3):
        p = dict(zip(("kind", "severity", "seed"), perturbation))
    else:
        raise ConfigError(f"perturbation must be a dict {{kind, severity[, seed]}} or (kind, severity), "
                          f"got {perturbation!r}")
    try:
        setting = PerturbationSetting(canonical_kind(str(p["kind"])), float(p["severity"]))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"perturbation {perturbation!r}: {exc}") from exc
    if setting.is_identity:
        return None
    return {"kind": setting.kind, "severity": setting.severity, "seed": int(p.get("seed", seed))}


def process_volume(volume: Volume, protocol: Mapping[str, Any], *, products: Sequence[str] = PRODUCTS,
                   skull_stripper: Any = None, rng: np.random.Generator | None = None,
                   label: np.ndarray | None = None, perturbation: Mapping[str, Any] | None = None,
                   strip_method: str = "none", device: str = "cpu") -> dict[str, Any]:
    """The paper's protocol on one validated volume (in memory).

    Returns ``downstream`` (D, H, W) float32 and ``label`` (D, H, W) uint8 when ``label`` is given,
    and/or ``slices`` (n, cube, cube) float32 with ``slice_index`` and ``blank``; plus ``timing``.
    """
    from brainfm.perturb import apply_perturbation

    p = resolve_protocol(protocol)
    t = {"perturb": 0.0, "strip": 0.0, "geometry": 0.0, "intensity": 0.0, "products": 0.0}
    t0 = time.perf_counter()
    if perturbation:
        # for already-stripped inputs keep the zero background zero (see brainfm.perturb)
        fg = volume.data != 0 if strip_method == "none" else None
        volume = volume.with_data(apply_perturbation(volume.data, perturbation["kind"], perturbation["severity"],
                                                     seed=int(perturbation.get("seed", 0)), mask=fg))
    t1 = time.perf_counter()
    t["perturb"] = t1 - t0
    stripper = skull_stripper if skull_stripper is not None else get_skull_stripper("none")
    stripped, _ = skull_strip(volume, stripper)
    t2 = time.perf_counter()
    t["strip"] = t2 - t1
    cropped, box = crop_to_bbox(stripped.data)
    cube = p["cube"]
    vol = resize(cropped, (cube, cube, cube), "trilinear", device=device)
    t3 = time.perf_counter()
    t["geometry"] = t3 - t2
    vol = normalize_intensity(vol, p["clip_percentiles"])
    t4 = time.perf_counter()
    t["intensity"] = t4 - t3
    out: dict[str, Any] = {"crop_box": [(s.start, s.stop) for s in box]}
    d, h, w = p["downstream_shape"]
    if "downstream" in products:
        out["downstream"] = to_dhw(resize(vol, (h, w, d), "trilinear", device=device))
        if label is not None:
            # one nearest-neighbour map from the cropped grid: the same voxel centres as crop->cube->(H, W, D)
            out["label"] = to_dhw(resize(label[box], (h, w, d), "nearest"))
    if "pretrain" in products:
        ps = p["pretrain_slices"]
        rng = rng if rng is not None else np.random.default_rng(0)
        idx = sample_slice_indices(rng, cube, ps["n"], ps["mu"], ps["sigma"])
        slices = to_dhw(vol[:, :, idx])
        out["slices"] = np.ascontiguousarray(slices)
        out["slice_index"] = idx
        out["blank"] = blank_flags(slices, p["blank_threshold"])
    t["products"] = time.perf_counter() - t4
    out["timing"] = t
    return out


# ---------------------------------------------------------------------------- workers
def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(threads)))


def _mp_context() -> mp.context.BaseContext:
    """Fresh worker processes, never a fork of this (possibly torch-threaded or CUDA-initialised) one.

    ``forkserver`` (POSIX) forks workers from a clean server that imports this module once, so
    workers start in milliseconds instead of each re-importing torch as ``spawn`` would.
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return mp.get_context("spawn")


def _run_row(task: dict[str, Any]) -> dict[str, Any]:
    """Validate + process one manifest row (in a worker); InputErrors become quarantine records."""
    key = task["key"]
    t0 = time.perf_counter()
    try:
        vol = load_volume(task["path"])
        fingerprint = image_fingerprint(vol.data)
        label = None
        if task.get("mask_path"):
            label = load_mask(task["mask_path"], like=vol)
        t_load = time.perf_counter() - t0
        stripper = get_skull_stripper(task["skull_strip"], device=task["device"])
        res = process_volume(vol, task["protocol"], products=task["products"], skull_stripper=stripper,
                             rng=volume_rng(task["seed"], key, "slices"), label=label,
                             perturbation=task["perturbation"], strip_method=task["skull_strip"],
                             device="cpu" if task["skull_strip"] == "none" else resolve_device(task["device"]))
    except InputError as exc:
        return {"ok": False, "key": key, "path": task["path"], "reason": str(exc)}
    except Exception as exc:  # a bug or an unforeseen data problem: stop, naming the file
        raise RuntimeError(f"{task['path']}: unexpected error while preprocessing ({type(exc).__name__}: {exc})") \
            from exc
    res["timing"]["load"] = t_load
    res["seconds"] = time.perf_counter() - t0
    # float16 halves what crosses the process boundary; the stores hold float16 anyway
    for name in ("downstream", "slices"):
        if name in res:
            res[name] = np.clip(res[name], -65504, 65504).astype(np.float16)
    if "label" in res:
        res["label"] = res["label"].astype(np.uint8 if res["label"].max() <= 255 else np.int32)
    return {"ok": True, "key": key, "path": task["path"], "result": res, "fingerprint": fingerprint}


# ---------------------------------------------------------------------------- driver
def _keys(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    if frame.empty:
        return []
    return list(zip(*(frame[c].astype(str) for c in KEY_COLUMNS)))


def _abs_path(root: Path, value: Any) -> str:
    p = Path(str(value))
    return str(p if p.is_absolute() else root / p)


def _has_value(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v).strip() != ""


def _sources_fingerprint(root: Path, rows: pd.DataFrame, has_masks: bool) -> str:
    """sha256 over every input file's key, size and modification time (cheap: no file is read)."""
    h = hashlib.sha256()
    cols = ["path", "mask_path"] if has_masks else ["path"]
    for key, row in zip(_keys(rows), rows[cols].itertuples(index=False)):
        h.update("|".join(key).encode())
        for value in row:
            if not _has_value(value):
                continue
            try:
                st = Path(_abs_path(root, value)).stat()
                h.update(f"|{value}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"|{value}|missing".encode())  # reported (quarantined) by the worker
        h.update(b"\n")
    return h.hexdigest()


def preprocess_dataset(manifest: pd.DataFrame, root: str | Path, out_dir: str | Path, *,
                       protocol: Mapping[str, Any] | None, products: Sequence[str] = PRODUCTS,
                       skull_strip: str = "none", n_jobs: int = 1, seed: int = 0,
                       perturbation: Mapping[str, Any] | Sequence[Any] | None = None,
                       device: str = "auto") -> dict[str, Any]:
    """Preprocess every manifest row into ``out_dir`` (see the module docstring); returns the report.

    ``perturbation``: ``{"kind", "severity"[, "seed"]}`` applied to each raw volume first (paper
    §4.5; use a separate ``out_dir`` per setting). ``device`` ("auto" | "cpu" | "cuda[:i]") is used
    by skull stripping and the resizes when stripping is on.
    """
    t_start = time.perf_counter()
    p = resolve_protocol(protocol)
    products = tuple(dict.fromkeys(products))
    if not products or any(x not in PRODUCTS for x in products):
        raise ConfigError(f"products must be a non-empty subset of {list(PRODUCTS)}, got {list(products)}")
    if skull_strip not in STRIPPERS:
        raise ConfigError(f"unknown skull_strip {skull_strip!r}; choose one of {list(STRIPPERS)}")
    if int(n_jobs) < 1:
        raise ConfigError(f"n_jobs must be >= 1, got {n_jobs}")
    get_skull_stripper(skull_strip, device=device)  # fail fast (e.g. HD-BET not installed) before any work
    pert = _resolve_perturbation(perturbation, seed)
    root, out_dir = Path(root), Path(out_dir)
    missing = [c for c in (*KEY_COLUMNS, "path") if c not in manifest.columns]
    if missing:
        raise ManifestError(f"manifest lacks column(s) {missing}")
    rows = manifest.reset_index(drop=True)
    keys = _keys(rows)
    if len(set(keys)) != len(keys):
        raise ManifestError("manifest has duplicate (dataset, subject, session, modality) rows")
    has_masks = "downstream" in products and "mask_path" in rows.columns and any(
        _has_value(v) for v in rows["mask_path"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").unlink(missing_ok=True)  # the sentinel appears only when everything is done

    # the input files' fingerprint: a regenerated dataset (same keys, new images) must not resume
    # from the volumes of its previous version
    store_protocol = {**p, "skull_strip": skull_strip, "seed": int(seed), "perturbation": pert,
                      "sources": _sources_fingerprint(root, rows, has_masks)}
    d, h, w = p["downstream_shape"]
    ps = p["pretrain_slices"]
    specs: dict[str, tuple[tuple[int, ...], str, dict[str, Any], int]] = {}
    if "downstream" in products:
        specs["downstream"] = ((d, h, w), "volume", store_protocol, p["shard_size_volumes"])
        if has_masks:
            specs["downstream_masks"] = ((d, h, w), "volume", {**store_protocol, "labels": "nearest"},
                                         p["shard_size_volumes"])
    if "pretrain" in products:
        specs["pretrain"] = ((p["cube"], p["cube"]), "slice", store_protocol, p["shard_size_slices"])
    writers: dict[str, ShardWriter] = {}
    wanted = set(keys)
    for name, (shape, kind, prot, size) in specs.items():
        wr = ShardWriter(out_dir / name, shape, kind, prot, size)
        if wr.n_items and not set(_keys(wr.present)) <= wanted:  # images left from another manifest
            log.warning("%s: holds images that are not in this manifest; rebuilding it", out_dir / name)
            wr = ShardWriter(out_dir / name, shape, kind, prot, size, resume=False)
        writers[name] = wr

    # what a previous (killed) run already stored
    done = {name: set(_keys(wr.present)) for name, wr in writers.items() if name != "pretrain"}
    done_slices: dict[tuple[str, ...], set[int]] = {}
    if "pretrain" in writers:
        pres = writers["pretrain"].present
        if len(pres):
            for k, g in pres.groupby(list(KEY_COLUMNS), sort=False):
                done_slices[tuple(str(v) for v in k)] = set(g["slice_index"].astype(int).tolist())

    tasks: list[dict[str, Any]] = []
    n_resumed = 0
    for i, key in enumerate(keys):
        row = rows.iloc[i]
        mask_path = _abs_path(root, row["mask_path"]) if has_masks and _has_value(row["mask_path"]) else None
        need = []
        if "downstream" in writers and key not in done["downstream"]:
            need.append("downstream")
        if mask_path and key not in done["downstream_masks"]:
            need.append("downstream_masks")
        if "pretrain" in writers and len(done_slices.get(key, ())) < ps["n"]:
            need.append("pretrain")
        if not need:
            n_resumed += 1
            continue
        prods = tuple(x for x in PRODUCTS if x in products and (x in need or (x == "downstream" and
                                                                              "downstream_masks" in need)))
        tasks.append({"key": key, "path": _abs_path(root, row["path"]), "mask_path": mask_path, "need": need,
                      "protocol": p, "products": prods, "skull_strip": skull_strip, "device": device,
                      "seed": int(seed),
                      "perturbation": None if pert is None else {**pert, "seed": stable_seed("perturb", pert["seed"],
                                                                                             *key)}})

    fp_path = out_dir / FINGERPRINT_FILE
    fingerprints: dict[tuple[str, ...], tuple[str, str]] = {}
    if fp_path.is_file():  # a resumed run keeps the fingerprints of the volumes it already stored
        for r in read_frame(fp_path, "fingerprints of the resumed run", [*KEY_COLUMNS, "path", "fingerprint"]).itertuples(
                index=False):
            fingerprints[tuple(str(getattr(r, c)) for c in KEY_COLUMNS)] = (str(r.path), str(r.fingerprint))
    quarantine: list[dict[str, Any]] = []
    seconds: list[float] = []
    timing: dict[str, float] = {}
    n_slices = n_blank = 0
    label = ",".join(sorted(rows["dataset"].astype(str).unique()))

    def consume(res: dict[str, Any], task: dict[str, Any]) -> None:
        nonlocal n_slices, n_blank
        key = task["key"]
        kd = dict(zip(KEY_COLUMNS, key))
        if not res["ok"]:
            quarantine.append({"path": res["path"], **kd, "reason": res["reason"]})
            log.warning("quarantined: %s", res["reason"])
            return
        r = res["result"]
        fingerprints[key] = (res["path"], res["fingerprint"])
        seconds.append(r["seconds"])
        for k, v in r["timing"].items():
            timing[k] = timing.get(k, 0.0) + v
        if "downstream" in task["need"]:
            writers["downstream"].add(kd, r["downstream"])
        if "downstream_masks" in task["need"]:
            writers["downstream_masks"].add(kd, r["label"])
        if "pretrain" in task["need"]:
            have = done_slices.get(key, set())
            for s_idx, sl, bl in zip(r["slice_index"], r["slices"], r["blank"]):
                if int(s_idx) not in have:
                    writers["pretrain"].add({**kd, "slice_index": int(s_idx), "blank": bool(bl)}, sl)
            n_slices += len(r["slice_index"])
            n_blank += int(np.count_nonzero(r["blank"]))

    bar = tqdm(total=len(keys), initial=n_resumed, desc=f"preprocess {label}", unit="vol", disable=None)
    try:
        try:
            if int(n_jobs) == 1 or len(tasks) <= 1:
                for task in tasks:
                    consume(_run_row(task), task)
                    bar.update(1)
            else:
                threads = max(1, (os.cpu_count() or 1) // int(n_jobs))
                with cf.ProcessPoolExecutor(int(n_jobs), mp_context=_mp_context(),
                                            initializer=_init_worker, initargs=(threads,)) as ex:
                    window: deque[tuple[cf.Future, dict[str, Any]]] = deque()
                    it = iter(tasks)
                    for task in it:
                        window.append((ex.submit(_run_row, task), task))
                        if len(window) >= 2 * int(n_jobs):
                            break
                    while window:
                        fut, task = window.popleft()
                        res = fut.result()
                        nxt = next(it, None)
                        if nxt is not None:
                            window.append((ex.submit(_run_row, nxt), nxt))
                        consume(res, task)
                        bar.update(1)
        except BaseException:
            for wr in writers.values():
                wr.abort()
            raise
        for wr in writers.values():
            wr.close()
    finally:
        bar.close()
        _write_quarantine(out_dir / "quarantine.csv", quarantine)
        _write_fingerprints(fp_path, fingerprints, keys)

    stale = [i for i, k in enumerate(keys) if k not in fingerprints and
             k not in {tuple(q[c] for c in KEY_COLUMNS) for q in quarantine}]
    if stale:  # stored by a run that predates fingerprints: read those scans once more
        for i in stale:
            path = _abs_path(root, rows.iloc[i]["path"])
            fingerprints[keys[i]] = (path, image_fingerprint(load_volume(path).data))
        _write_fingerprints(fp_path, fingerprints, keys)

    stores = {name: {"path": name, "n_items": wr.n_items, "item_shape": list(wr.item_shape)}
              for name, wr in writers.items()}
    n_ok = next(iter(stores.values()))["n_items"] if stores else 0
    if len(keys) and n_ok == 0:
        first = quarantine[0]["reason"] if quarantine else "no usable image"
        raise InputError(out_dir / "quarantine.csv", f"all {len(keys)} image(s) were quarantined; first: {first}")
    total = time.perf_counter() - t_start
    report = {
        "dataset": label,
        "n_images": len(keys),
        "n_processed": len(seconds),
        "n_resumed": n_resumed,
        "n_quarantined": len(quarantine),
        "quarantined": quarantine,
        "products": list(products),
        "skull_strip": skull_strip,
        "seed": int(seed),
        "perturbation": pert,
        "protocol": p,
        "stores": stores,
        "n_slices_sampled": n_slices,
        "n_blank_slices": n_blank,
        "fingerprints": {"path": FINGERPRINT_FILE, "n_items": sum(k in fingerprints for k in keys)},
        "n_jobs": int(n_jobs),
        "seconds": total,
        "seconds_per_volume": float(np.mean(seconds)) if seconds else None,
        "timing_total": timing,
    }
    write_json(out_dir / "report.json", report)
    return report


def _write_fingerprints(path: Path, fingerprints: Mapping[tuple[str, ...], tuple[str, str]],
                        keys: Sequence[tuple[str, ...]]) -> None:
    """The fingerprints of this manifest's volumes, in manifest order (atomically)."""
    from brainfm.atomic import write_parquet

    records = [{**dict(zip(KEY_COLUMNS, k)), "path": fingerprints[k][0], "fingerprint": fingerprints[k][1]}
               for k in keys if k in fingerprints]
    write_parquet(path, pd.DataFrame.from_records(records, columns=[*KEY_COLUMNS, "path", "fingerprint"]))


def _write_quarantine(path: Path, records: list[dict[str, Any]]) -> None:
    df = pd.DataFrame(records, columns=list(QUARANTINE_COLUMNS))
    with atomic_open(path, "w") as fh:
        df.to_csv(fh, index=False)


def projected_store_bytes(n_volumes: int, protocol: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Disk bytes of the float16 stores for ``n_volumes`` (pixels only; index/meta are negligible)."""
    p = resolve_protocol(protocol)
    d, h, w = p["downstream_shape"]
    cube, n = p["cube"], p["pretrain_slices"]["n"]
    return {"downstream": int(n_volumes) * d * h * w * 2, "pretrain": int(n_volumes) * n * cube * cube * 2}


def preprocess(manifest: str | Path, out_dir: str | Path, spec: Any, *, products: Sequence[str] = PRODUCTS,
               seed: int = 0, perturbation: str | None = None, device: str = "auto",
               n_jobs: int | None = None) -> dict[str, Any]:
    """The ``preprocess`` step: a dataset's manifest -> its stores under ``out_dir`` (see the module docstring).

    ``spec`` is the run's :class:`brainfm.config.PreprocessSpec` (protocol, skull stripping,
    ``n_jobs``); ``perturbation`` a setting tag such as ``gamma~2`` (the perturbed variant of the step).
    """
    from brainfm.data.manifest import read_manifest

    frame = read_manifest(manifest)
    setting = PerturbationSetting.parse(perturbation) if perturbation else None
    return preprocess_dataset(frame, Path(frame.attrs["root"]), Path(out_dir), protocol=spec.protocol.to_dict(),
                              products=tuple(products), skull_strip=spec.skull_strip,
                              n_jobs=n_jobs or spec.n_jobs, seed=seed, device=device,
                              perturbation=None if setting is None else
                              {"kind": setting.kind, "severity": setting.severity})
