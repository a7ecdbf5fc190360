"""Strict checkpoint loading and exporting for registry encoders.

Why strict: the public BrainDINO code loads every backbone with ``strict=False``, which silently
leaves mis-named parameters at their random initialisation (anchors: BM-MAE's lowercase modality
keys). Here every key of the file and of the model is accounted for: a key that is missing from
the file, or present in the file but not in the model, is an error unless the caller declared it
expected (shell-style patterns, e.g. ``"head.*"``); a shape mismatch is always an error. Nothing is
resized or interpolated behind the user's back.

Layouts. The loader names the layout it recognised (:class:`Layout`) in every error and in the
load info stored with features. It unwraps containers itself and lets the encoder recognise its
authors' layouts (:meth:`brainfm.models.base.Encoder.convert_state_dict`):

``DINOv3 teacher``
    ``{"teacher": {"backbone.<name>": ..., "dino_head.*": ..., "ibot_head.*": ...}}``, the
    evaluation checkpoint the DINOv3 trainer writes (and our pretraining exports). Keys outside
    ``backbone.`` are ignored, as Meta's evaluation loader does. Backbone names may be native
    DINOv3 or timm names.
``DINOv3 native``
    A DINOv3 backbone state dict in Meta's naming (``storage_tokens``, ``blocks.N.ls1.gamma``,
    ``blocks.N.attn.qkv.bias`` + ``bias_mask``, ``rope_embed.periods``, ``mask_token``), detected
    by those names when the target is a timm DINOv3 (``Eva``) model and converted by
    :func:`dinov3_to_timm` (renames only; numerically verified against timm's
    ``eva.checkpoint_filter_fn`` and by round trips in the tests). Native weights must carry
    ``rope_embed.periods`` (Meta's loader refuses a file without them) unless the caller passes
    ``allow_missing_rope_periods=True``.
``timm``
    A state dict in the target module's own names: ``.safetensors``, ``.pth``/``.pt``, possibly
    wrapped as ``{"model": ...}``, ``{"state_dict": ...}`` (``Lightning`` when the wrapper carries
    Lightning's training metadata) or ``{"model_ema": ...}``.
Encoder layouts
    The 3D baselines recognise their authors' files: ``Lightning`` (BrainIAC), ``MONAI`` (bare
    MONAI networks), ``MedicalNet DataParallel``, ``BrainMVP RecModel``, ``BM-MAE raw`` ... (see
    :mod:`brainfm.models.baselines`). Keys those authors' loaders drop (heads, decoders) are
    ignored, listed in the load info and logged at WARNING.

Wrapper prefixes (``module.`` of DataParallel/DDP, ``_orig_mod.`` of ``torch.compile``) are
removed key by key, so a stray key is reported as itself.

RoPE precision (timm DINOv3 targets, :mod:`brainfm.models.rope`). ``rope_dtype="auto"`` follows
the code that produced the file: a DINOv3 teacher checkpoint with bf16 ``rope_embed.periods``
comes from Meta's trainer, which computes RoPE in bf16, and is run that way; native backbone files
(Meta's releases, read by its hub builder with fp32 RoPE), teachers with float32 periods (our
pretraining) and timm files run in float32. ``"float32"``/``"bfloat16"`` force a choice. The
choice and its reason are recorded in the load info. LayerNorm epsilon is not recorded in any of
these files (Meta's trainer default ``layernorm`` is 1e-6, timm's DINOv3 ViTs use 1e-5): it is an
encoder argument (``norm_eps``, :func:`brainfm.models.vit.build_slice_encoder`); the load info
records the value in use.

Files are read with ``torch.load(weights_only=True)`` or safetensors (never unpickling code), and
the sha256 of the file is returned so feature metadata can pin the exact weights.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainfm.atomic import atomic_path, save_torch
from brainfm.errors import CheckpointError, ConfigError


# RoPE helpers live with timm's DINOv3 classes (brainfm.models.rope imports timm, seconds per process).
# A model can only hold a timm RoPE module once timm is imported, so the checks answer without it and
# 3D baselines (MONAI ResNets...) load their weights without importing timm at all.
def has_dinov3_rope(model: nn.Module) -> bool:
    if "timm" not in sys.modules:
        return False
    from brainfm.models.rope import has_dinov3_rope as check

    return check(model)


def rope_dtype_of(model: nn.Module) -> str | None:
    if "timm" not in sys.modules:
        return None
    from brainfm.models.rope import rope_dtype_of as dtype_of

    return dtype_of(model)


def set_rope_dtype(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
    from brainfm.models.rope import set_rope_dtype as set_dtype

    return set_dtype(model, *args, **kwargs)

__all__ = [
    "FORMATS",
    "ROPE_DTYPE_OPTIONS",
    "Layout",
    "load_encoder_weights",
    "read_checkpoint",
    "extract_state_dict",
    "strip_wrapper_prefixes",
    "dinov3_to_timm",
    "timm_to_dinov3",
    "export_dinov3_teacher",
    "export_timm",
    "sha256_file",
]

log = logging.getLogger("brainfm.models")

FORMATS = ("auto", "dinov3_teacher", "dinov3_native", "timm")
ROPE_DTYPE_OPTIONS = ("auto", "float32", "bfloat16")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile
# keys a Lightning checkpoint writes next to its 'state_dict'
_LIGHTNING_KEYS = ("pytorch-lightning_version", "global_step", "optimizer_states", "lr_schedulers", "loops",
                   "callbacks", "hyper_parameters")
# training-only entries of native DINO checkpoints that a frozen timm backbone has no use for
_NATIVE_TRAINING_ONLY = ("mask_token", "local_cls_norm.*")
_MAX_LISTED = 10


@dataclass
class Layout:
    """The checkpoint layout the loader recognised: named in errors, recorded in the load info.

    ``format`` is a stable identifier (``dinov3_teacher``, ``dinov3_native``, ``timm``,
    ``lightning``, ``monai``, ...), ``name`` the human name, ``container`` how the tensors were
    wrapped in the file, ``stripped`` the wrapper prefixes removed (prefix -> number of keys).
    ``ignored`` are entries dropped on purpose inside the backbone (training-only tensors),
    ``outside`` the keys outside the backbone that the authors' loaders drop (heads, decoders).
    """

    format: str
    name: str
    container: str
    stripped: dict[str, int] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def recognise(self, fmt: str, name: str) -> None:
        self.format, self.name = fmt, name

    def describe(self) -> str:
        text = f"recognised layout: {self.name}; {self.container}"
        for prefix, n in self.stripped.items():
            text += f"; {prefix!r} removed from {n} key(s)"
        return text


# ----------------------------------------------------------------------------- reading
def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (recorded in feature metadata to pin the exact weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> Any:
    """Load a weights file without executing code: safetensors, or ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "weights file not found")
    if not path.is_file():
        raise CheckpointError(path, "is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, pickled code, wrong format ...
        msg = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise CheckpointError(path, f"cannot be read as a weights file ({type(exc).__name__}: {msg})") from exc


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    head = ", ".join(keys[:_MAX_LISTED])
    return head + (f" ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def strip_wrapper_prefixes(state: Mapping[str, torch.Tensor], path: str | Path,
                           stripped: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Remove leading ``module.`` / ``_orig_mod.`` from each key that has them (counted in ``stripped``).

    Key by key, so one key without the prefix stays itself; two keys that become the same name
    are an error naming both.
    """
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    counts = stripped if stripped is not None else {}
    for key, value in state.items():
        name = key
        while True:
            prefix = next((p for p in WRAPPER_PREFIXES if name.startswith(p)), None)
            if prefix is None:
                break
            name = name[len(prefix):]
            counts[prefix] = counts.get(prefix, 0) + 1
        if name in out:
            raise CheckpointError(path, f"keys {origin[name]!r} and {key!r} are the same parameter {name!r} once "
                                        "wrapper prefixes are removed")
        out[name], origin[name] = value, key
    return out


def extract_state_dict(obj: Any, path: str | Path, fmt: str = "auto") -> tuple[dict[str, torch.Tensor], Layout]:
    """Unwrap a loaded checkpoint object to a flat tensor dict and the :class:`Layout` recognised.

    A DINOv3 teacher keeps its ``backbone.*`` keys (prefix removed); its other keys (DINO/iBOT
    heads) land in ``layout.outside``. Other containers are unwrapped (``model_ema`` / ``model``
    / ``state_dict``, nested once at most). Wrapper prefixes are removed key by key.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown checkpoint format {fmt!r}; one of {FORMATS}")
    stripped: dict[str, int] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("teacher"), Mapping):
        teacher = obj["teacher"]
        if not _is_tensor_dict(teacher):
            raise CheckpointError(path, "'teacher' entry is empty or holds non-tensor values")
        teacher = strip_wrapper_prefixes(teacher, path, stripped)
        state = {k[len("backbone."):]: v for k, v in teacher.items() if k.startswith("backbone.")}
        if not state:
            raise CheckpointError(path, "DINOv3 teacher checkpoint has no 'backbone.*' keys")
        layout = Layout("dinov3_teacher", "DINOv3 teacher", "{'teacher': {'backbone.*', ...}}", stripped,
                        outside=sorted(k for k in teacher if not k.startswith("backbone.")))
        return state, layout
    if fmt == "dinov3_teacher":
        raise CheckpointError(path, "expected a DINOv3 teacher checkpoint {'teacher': {'backbone.*': ...}}")
    wrappers: list[str] = []
    lightning = False
    for _ in range(2):  # {"model": {...}} / {"state_dict": {...}} / {"model_ema": ...}, possibly nested once
        if _is_tensor_dict(obj) or not isinstance(obj, Mapping):
            break
        key = next((k for k in ("model_ema", "model", "state_dict") if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        lightning = lightning or (key == "state_dict" and any(k in obj for k in _LIGHTNING_KEYS))
        wrappers.append(key)
        obj = obj[key]
    if not _is_tensor_dict(obj):
        what = f"keys {_listed(map(str, obj))}" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(path, "no tensor state dict found (expected a DINOv3 {'teacher': ...}, a timm state "
                                    f"dict, or a {{'model'|'state_dict': ...}} wrapper); got {what}")
    state = strip_wrapper_prefixes(obj, path, stripped)
    container = "bare state dict"
    for key in reversed(wrappers):
        container = f"{{{key!r}: {container if container != 'bare state dict' else '...'}}}"
    if lightning:
        container = f"Lightning checkpoint {container}"
    layout = Layout("lightning" if lightning else "state_dict", "Lightning" if lightning else "state dict",
                    container, stripped)
    return state, layout


# ----------------------------------------------------------------------------- DINOv3 <-> timm names
def _is_eva(module: nn.Module) -> bool:
    return type(module).__name__ == "Eva"


def looks_native_dinov3(state: Mapping[str, torch.Tensor]) -> bool:
    """Meta DINOv3 naming: storage tokens, ``ls1.gamma`` layer scales, or RoPE periods in the state."""
    return ("storage_tokens" in state or "rope_embed.periods" in state
            or any(k.endswith((".ls1.gamma", ".ls2.gamma", ".qkv.bias_mask")) for k in state))


def dinov3_to_timm(state: Mapping[str, torch.Tensor], model: nn.Module,
                   path: str | Path = "<state dict>") -> tuple[dict[str, torch.Tensor], list[str], torch.Tensor | None]:
    """Native DINOv3 backbone names -> timm ``Eva`` names (pure renames, no resampling).

    * ``storage_tokens`` -> ``reg_token``; ``blocks.N.ls{1,2}.gamma`` -> ``blocks.N.gamma_{1,2}``.
    * ``blocks.N.attn.qkv.bias`` (times ``bias_mask`` if present) -> ``q_bias``/``v_bias`` for
      ``*_qkvb`` models. timm has no key bias, so the effective (masked) key bias must be zero:
      DINOv3's ``mask_k_bias`` guarantees it. Without RoPE a constant key bias would cancel in
      the softmax, but RoPE rotates it differently at every position, so a non-zero one changes
      the features and is an error (timm's own filter drops it silently). For models without
      q/v biases, non-zero q/v biases are an error too (the official distilled ViTs have zeros).
    * ``rope_embed.periods`` is returned separately (timm recomputes it; the caller checks and
      applies it); ``mask_token`` and ``local_cls_norm.*`` are training-only and returned as ignored.

    Returns ``(timm_state, ignored_keys, rope_periods_or_None)``.
    """
    target_keys = set(model.state_dict())
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    periods = None
    for k, v in state.items():
        if k == "rope_embed.periods":
            periods = v
            continue
        if any(fnmatch.fnmatchcase(k, p) for p in _NATIVE_TRAINING_ONLY):
            ignored.append(k)
            continue
        if k.endswith(".qkv.bias_mask"):
            continue  # consumed with qkv.bias
        if k.endswith(".qkv.bias"):
            mask = state.get(k + "_mask")
            bias = v.float()
            if mask is not None:
                if not torch.isfinite(mask).all():
                    raise CheckpointError(path, f"{k}_mask holds NaN/inf (an uninitialised LinearKMaskedBias)")
                bias = bias * mask.float()
            q, kb, vb = bias.chunk(3, dim=-1)
            if bool((kb != 0).any()):
                raise CheckpointError(path, f"{k} has a non-zero key bias and no bias_mask zeroing it; timm's DINOv3 "
                                            "attention has no key bias and under RoPE it is not softmax-invariant")
            q_key, v_key = k[: -len("qkv.bias")] + "q_bias", k[: -len("qkv.bias")] + "v_bias"
            if q_key in target_keys:
                out[q_key], out[v_key] = q.to(v.dtype), vb.to(v.dtype)
            elif bool((q != 0).any() or (vb != 0).any()):
                raise CheckpointError(path, f"{k} has non-zero query/value biases but the architecture has no qkv "
                                            "bias; use the '*_qkvb' variant of the architecture")
            else:
                ignored.append(k)
            continue
        if k == "storage_tokens":
            k = "reg_token"
        k = k.replace(".ls1.gamma", ".gamma_1").replace(".ls2.gamma", ".gamma_2")
        out[k] = v
    return out, ignored, periods


def timm_to_dinov3(model: nn.Module) -> dict[str, torch.Tensor]:
    """A timm ViT's state dict in native DINOv3 names (the inverse of :func:`dinov3_to_timm`).

    For ``Eva`` models: ``reg_token`` -> ``storage_tokens``, ``gamma_{1,2}`` -> ``ls{1,2}.gamma``,
    ``q_bias``/``v_bias`` -> ``qkv.bias`` with a zero key part and ``qkv.bias_mask`` = (1, 0, 1)
    (DINOv3's ``mask_k_bias``), plus ``rope_embed.periods``. Other timm ViTs (DINOv2 family) keep
    their names, which already match Meta's except for register tokens.
    """
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if not _is_eva(model):
        return state
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith(".v_bias"):
            continue
        if k.endswith(".q_bias"):
            stem = k[: -len("q_bias")]
            vb = state[stem + "v_bias"]
            out[stem + "qkv.bias"] = torch.cat([v, torch.zeros_like(v), vb])
            out[stem + "qkv.bias_mask"] = torch.cat([torch.ones_like(v), torch.zeros_like(v), torch.ones_like(vb)])
            continue
        if k == "reg_token":
            k = "storage_tokens"
        k = k.replace(".gamma_1", ".ls1.gamma").replace(".gamma_2", ".ls2.gamma")
        out[k] = v
    rope = getattr(model, "rope", None)
    if rope is not None and torch.is_tensor(getattr(rope, "periods", None)):
        # in the precision the model computes RoPE: bf16 periods tell the loader to run RoPE in bf16
        dtype = torch.bfloat16 if rope_dtype_of(model) == "bfloat16" else torch.float32
        out["rope_embed.periods"] = rope.periods.detach().to(dtype)
    return out


def _check_rope_periods(model: nn.Module, periods: torch.Tensor, path: str | Path) -> None:
    """The file's RoPE periods (upstream stores them rounded to bf16) must fit the architecture's."""
    current = model.rope.periods
    if tuple(periods.shape) != tuple(current.shape):
        raise CheckpointError(path, f"rope_embed.periods shape {tuple(periods.shape)} != model {tuple(current.shape)} "
                                    "(head dimension mismatch)")
    default = model.rope._compute_periods(device="cpu", dtype=torch.float32)
    if not torch.allclose(periods.detach().float().cpu(), default, rtol=1e-2, atol=0.0):
        raise CheckpointError(path, "rope_embed.periods differ from the architecture's (RoPE base/temperature "
                                    "mismatch): choose the matching arch")


@dataclass
class _RopePlan:
    dtype: str
    reason: str
    periods: torch.Tensor | None
    allow_missing: bool

    def info(self) -> dict[str, Any]:
        return {"rope_dtype": self.dtype, "rope_dtype_reason": self.reason,
                "rope_periods": "checkpoint" if self.periods is not None else "architecture",
                "allow_missing_rope_periods": self.allow_missing}


def _plan_rope(target: nn.Module, layout: Layout, native: bool, periods: torch.Tensor | None, rope_dtype: str,
               allow_missing: bool, path: Path) -> _RopePlan | None:
    """Decide (before any weight is touched) which periods and which precision the RoPE will use."""
    if rope_dtype not in ROPE_DTYPE_OPTIONS:
        raise ConfigError(f"rope_dtype must be one of {ROPE_DTYPE_OPTIONS}, got {rope_dtype!r}")
    if not has_dinov3_rope(target):
        if periods is not None:
            raise CheckpointError(path, "checkpoint has rope_embed.periods but the architecture has no DINOv3 RoPE")
        if rope_dtype != "auto":
            raise ConfigError(f"rope_dtype={rope_dtype!r} applies to timm DINOv3 ViTs, not {type(target).__name__}")
        return None
    teacher = layout.format == "dinov3_teacher"
    if native and periods is None and not allow_missing:
        key = "backbone.rope_embed.periods" if teacher else "rope_embed.periods"
        raise CheckpointError(path, f"{layout.name} weights have no {key!r} (Meta's loader refuses such a file); "
                                    "pass allow_missing_rope_periods=True to use the periods of the architecture's "
                                    "RoPE base instead")
    if periods is not None:
        _check_rope_periods(target, periods, path)
    if rope_dtype != "auto":
        reason = "rope_dtype option"
        dtype = rope_dtype
    elif teacher and periods is not None and periods.dtype == torch.bfloat16:
        dtype = "bfloat16"
        reason = "bf16 rope_embed.periods in a DINOv3 teacher checkpoint: Meta's trainer computes RoPE in bf16"
    else:
        dtype = "float32"
        if native and not teacher:
            reason = "DINOv3 native backbone file: Meta's hub builder computes RoPE in fp32"
        elif periods is not None:
            reason = f"{str(periods.dtype).replace('torch.', '')} rope_embed.periods"
        else:
            reason = "no RoPE periods in the file: timm's float32 RoPE"
    return _RopePlan(dtype, reason, periods, bool(allow_missing))


def _layernorm_eps(module: nn.Module) -> float | list[float] | None:
    eps = sorted({float(m.eps) for m in module.modules() if isinstance(m, nn.LayerNorm)})
    return None if not eps else eps[0] if len(eps) == 1 else eps


# ----------------------------------------------------------------------------- loading
def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_encoder_weights(model: nn.Module, path: str | Path, *, fmt: str = "auto",
                         expected_missing: Sequence[str] = (), expected_unexpected: Sequence[str] = (),
                         key_prefix: str | None = None, rope_dtype: str = "auto",
                         allow_missing_rope_periods: bool = False) -> dict[str, Any]:
    """Load ``path`` into ``model`` checking every key; returns a JSON-able load report.

    ``model`` is an :class:`~brainfm.models.base.Encoder` (its ``weight_module()`` receives the
    weights, after its ``convert_state_dict`` hook) or any ``nn.Module``. ``expected_missing`` /
    ``expected_unexpected`` are shell-style patterns of model keys that may stay at their
    initialisation / file keys that may be left unused. ``key_prefix`` selects the file keys
    under that prefix (e.g. ``"backbone."`` in a Lightning checkpoint) and strips it; the other
    keys are ignored like the keys outside a DINOv3 teacher's backbone (listed, logged at WARNING).
    ``rope_dtype`` (``"auto"``, ``"float32"``, ``"bfloat16"``) and ``allow_missing_rope_periods``
    concern timm DINOv3 targets (see the module docstring). Raises :class:`CheckpointError` naming
    the file and the recognised layout on any problem.
    """
    from brainfm.models.base import Encoder

    path = Path(path)
    expected_missing, expected_unexpected = tuple(expected_missing), tuple(expected_unexpected)
    target = model.weight_module() if isinstance(model, Encoder) else model
    obj = read_checkpoint(path)
    state, layout = extract_state_dict(obj, path, fmt)
    if key_prefix:
        outside = [k for k in state if not k.startswith(key_prefix)]
        state = {k[len(key_prefix):]: v for k, v in state.items() if k.startswith(key_prefix)}
        if not state:
            raise CheckpointError(path, f"no keys under prefix {key_prefix!r} ({layout.describe()})")
        layout.outside += outside

    periods = None
    if fmt == "dinov3_native":
        native = True
    elif fmt in ("auto", "dinov3_teacher"):
        # ``ls1.gamma`` is also timm's own name in DINOv2-style ViTs: only unambiguous for Eva targets
        native = (looks_native_dinov3(state) if _is_eva(target)
                  else "storage_tokens" in state or "rope_embed.periods" in state)
    else:
        native = False
    if native:
        if not _is_eva(target):
            raise CheckpointError(path, f"native DINOv3 weights need a timm DINOv3 (Eva) architecture, "
                                        f"not {type(target).__name__} ({layout.describe()})")
        state, dropped, periods = dinov3_to_timm(state, target, path)
        layout.ignored += dropped
        if layout.format != "dinov3_teacher":
            layout.recognise("dinov3_native", "DINOv3 native")
    elif layout.format != "dinov3_teacher" and type(target).__module__.startswith("timm."):
        if layout.format == "lightning":
            layout.recognise("timm", "timm (Lightning checkpoint)")
        else:
            layout.recognise("timm", "timm")
    rope = _plan_rope(target, layout, native, periods, rope_dtype, allow_missing_rope_periods, path)
    if isinstance(model, Encoder):
        state = model.convert_state_dict(state, path, layout)

    own = target.state_dict()
    if layout.format == "dinov3_teacher" and "mask_token" in state and "mask_token" not in own:
        del state["mask_token"]  # iBOT mask token of a DINO teacher: training-only
        layout.ignored.append("mask_token")
    missing = [k for k in own if k not in state and not _matches(k, expected_missing)]
    unexpected = [k for k in state if k not in own and not _matches(k, expected_unexpected)]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_listed(shapes)}")
    if problems:
        raise CheckpointError(path, f"does not match {type(target).__name__} ({layout.describe()}): "
                                    + "; ".join(problems))
    nonfinite = [k for k, v in state.items() if k in own and v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise CheckpointError(path, f"non-finite values in {len(nonfinite)} tensor(s): {_listed(nonfinite)}")

    loadable = {k: v for k, v in state.items() if k in own}
    result = target.load_state_dict(loadable, strict=False)
    # every remaining missing key was declared; anything else would be a bug in the checks above
    assert not result.unexpected_keys, result.unexpected_keys
    if rope is not None:
        set_rope_dtype(target, rope.dtype, rope.periods)
    info: dict[str, Any] = {
        "path": str(path),
        "sha256": sha256_file(path),
        "format": layout.format,
        "layout": layout.name,
        "container": layout.container,
        "n_tensors": len(loadable),
        "ignored": sorted(set(layout.ignored) | set(layout.outside)),
        "declared_missing": sorted(k for k in own if k not in state),
        "declared_unexpected": sorted(k for k in state if k not in own),
    }
    if layout.stripped:
        info["stripped_prefixes"] = dict(layout.stripped)
    if rope is not None:
        info.update(rope.info())
        info["layernorm_eps"] = _layernorm_eps(target)
    if layout.outside:
        log.warning("%s (%s): %d key(s) outside the backbone ignored, as the authors' loader does: %s", path,
                    layout.name, len(layout.outside), _listed(layout.outside))
    log.info("loaded %s (%s, %d tensors, %d ignored, sha256 %s%s)", path, layout.name, len(loadable),
             len(info["ignored"]), info["sha256"][:12], f", RoPE {rope.dtype}" if rope is not None else "")
    return info


# ----------------------------------------------------------------------------- exporting
def _module(model: nn.Module) -> nn.Module:
    from brainfm.models.base import Encoder

    return model.weight_module() if isinstance(model, Encoder) else model


def _cpu(v: torch.Tensor) -> torch.Tensor:
    return v.detach().to("cpu").contiguous().clone()


def export_dinov3_teacher(model: nn.Module, path: str | Path,
                          heads: Mapping[str, nn.Module | Mapping[str, torch.Tensor]] | None = None) -> dict[str, Any]:
    """Write ``{"teacher": {"backbone.<native DINOv3 name>": ..., "<head>.<name>": ...}}`` atomically.

    This is the layout DINOv3's trainer writes for evaluation and that BrainDINO/MedDINOv3 read.
    ``heads`` maps a prefix (``"dino_head"``, ``"ibot_head"``) to a module or state dict.
    Returns ``{"path", "sha256"}``.
    """
    teacher = {f"backbone.{k}": _cpu(v) for k, v in timm_to_dinov3(_module(model)).items()}
    for prefix, head in (heads or {}).items():
        sd = head.state_dict() if isinstance(head, nn.Module) else head
        teacher.update({f"{prefix}.{k}": _cpu(v) for k, v in sd.items()})
    save_torch(path, {"teacher": teacher})
    return {"path": str(path), "sha256": sha256_file(path)}


def export_timm(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Write the timm-named state dict as safetensors (loadable by timm ``load_state_dict``) atomically.

    Note: timm recomputes RoPE periods in float32 and runs RoPE in float32, so a model whose periods
    came from a native checkpoint (bf16-rounded upstream) or that computes RoPE in bf16 is only
    reproduced exactly by :func:`export_dinov3_teacher`.
    """
    from safetensors.torch import save_file

    module = _module(model)
    state = {k: _cpu(v) for k, v in module.state_dict().items()}
    if has_dinov3_rope(module):
        rope = module.rope
        default = rope._compute_periods(device=rope.periods.device, dtype=torch.float32)
        if rope_dtype_of(module) != "float32" or not torch.equal(default, rope.periods.float()):
            log.warning("export_timm(%s): the model's RoPE (%s, periods %s timm's) cannot be stored in timm format; "
                        "use export_dinov3_teacher for an exact copy", path, rope_dtype_of(module),
                        "equal to" if torch.equal(default, rope.periods.float()) else "differing from")
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    return {"path": str(path), "sha256": sha256_file(path)}
