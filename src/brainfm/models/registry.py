"""Encoder registry in the style of ``timm.create_model``: a name maps to a factory function.

Factories have the signature ``fn(weights: str | None = None, **kwargs) -> Encoder`` and are
registered with the :func:`register_encoder` decorator. The built-in ViT encoders live in
:mod:`brainfm.models.vit`; the 3D baselines in :mod:`brainfm.models.baselines` (optional
package). Both are imported on the first registry lookup, so ``import brainfm.models`` stays
cheap and a module that registers encoders can itself ``from brainfm.models import ...``
without an import cycle.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brainfm.errors import ConfigError, InputError
from brainfm.models.base import Encoder
from brainfm.models.catalog import ENCODERS

__all__ = ["register_encoder", "create_encoder", "list_encoders", "get_factory", "load_plugins", "user_weights"]

log = logging.getLogger("brainfm.models")

Factory = Callable[..., Any]
_REGISTRY: dict[str, Factory] = {}
_PLUGINS = ("brainfm.models.vit", "brainfm.models.baselines", "brainfm.models.reference")  # baselines: optional
_plugins_loaded = False


def register_encoder(name: str) -> Callable[[Factory], Factory]:
    """Decorator: register ``fn`` under ``name``. Re-registering a different function is an error."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise ConfigError(f"encoder name must be a non-empty string without surrounding spaces, got {name!r}")

    def deco(fn: Factory) -> Factory:
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ConfigError(f"encoder {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        _REGISTRY[name] = fn
        return fn

    return deco


def load_plugins() -> None:
    """Import the modules that register encoders (once). A missing ``baselines`` package is fine."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for mod in _PLUGINS:
        try:
            module = importlib.import_module(mod)
            if hasattr(module, "register_all"):
                module.register_all()
        except ModuleNotFoundError as exc:
            # only the absence of the optional module itself is tolerated; a broken import inside
            # it (a missing dependency) is a real error and propagates
            if exc.name != mod or mod == _PLUGINS[0]:
                _plugins_loaded = False
                raise
            log.debug("optional encoder module %s not present", mod)


def list_encoders(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` (``"vit_*"``)."""
    load_plugins()
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_factory(name: str) -> Factory:
    if name not in _REGISTRY and name in ENCODERS:
        importlib.import_module(ENCODERS[name].module)
    if name in _REGISTRY:
        return _REGISTRY[name]
    load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r}; known encoders: {', '.join(sorted(_REGISTRY))}") from None


def create_encoder(name: str, weights: str | Path | None = None, *, freeze: bool = True, **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name``, optionally loading ``weights`` (strictly).

    The result is frozen (no gradients, eval mode, see :meth:`Encoder.freeze`) unless
    ``freeze=False`` (full fine-tuning comparisons). Unknown keyword arguments raise ConfigError.
    """
    factory = get_factory(name)
    try:
        enc = factory(weights=None if weights in (None, "", "none") else str(weights), **kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ConfigError(f"encoder {name!r}: {exc}") from exc
        raise
    if not isinstance(enc, Encoder):
        raise TypeError(f"factory of encoder {name!r} returned {type(enc).__name__}, not an Encoder")
    enc.name = name
    if freeze:
        enc.freeze()
    return enc


def user_weights(key: str, encoder: str, path: str | Path) -> None:
    """The ``user_weights`` step: a weights file the config names is missing; say what to put where.

    brainfm never downloads released weights; the error names the file, the config key, and the
    encoder's own description of what its authors released.
    """
    doc = (get_factory(encoder).__doc__ or "").strip().splitlines()
    what = doc[0].split(";")[0].replace("``", "") if doc else encoder
    raise InputError(path, f"{key} names this weights file, which does not exist. Released weights are not "
                           f"downloaded by brainfm: obtain the file ({what}) from its authors and place it at "
                           f"{path}, or change {key} in the config.")
