"""One visual style for every figure: fixed backbone colours, display names, and atomic saving.

A backbone keeps its colour in every figure of a run and across runs: known backbones have
assigned colours (BrainDINO red, as in the paper's contours), and any other name (a user's own
encoder) gets a colour from a second palette chosen by a hash of the name, so it does not depend
on which other backbones a figure happens to show. Only if two unknown names in the same figure
hash to the same colour is the later one (alphabetically) moved to the next free colour.

Figures are built on :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: no
global figure registry, no GUI backend, safe in Snakemake jobs and threads (the file formats are
rendered by the Agg and PDF canvases).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

from brainfm.atomic import atomic_path
from brainfm.models.catalog import ENCODERS, is_reference

__all__ = [
    "KNOWN_COLORS", "EXTRA_COLORS", "DISPLAY_NAMES", "backbone_color", "palette", "display_name", "marker",
    "order_backbones", "is_reference", "linestyle", "REFERENCE_TAG", "metric_label", "ratio_label", "style", "new_figure", "save_figure", "output_paths", "RC",
]

# colours and names of the built-in encoders (brainfm.models.catalog, the one list of encoders),
# plus "scratch", the paper's name for a randomly initialised backbone
KNOWN_COLORS: dict[str, str] = {}
for _name, _info in ENCODERS.items():
    if _info.color:
        KNOWN_COLORS[_name] = _info.color
    if _name == "brainfound":  # the paper's order: the random-init controls after the pretrained encoders
        KNOWN_COLORS["scratch"] = "#7f7f7f"
EXTRA_COLORS: tuple[str, ...] = (  # saturated, and distinct from the known colours above
    "#bcbd22", "#393b79", "#637939", "#8c6d31", "#7b4173", "#a55194", "#000000", "#e7ba52",
    "#5254a3", "#8ca252", "#843c39", "#6baed6",
)
DISPLAY_NAMES: dict[str, str] = {**{n: e.label for n, e in ENCODERS.items()}, "scratch": "Scratch"}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")
_KNOWN_ORDER = list(KNOWN_COLORS)
REFERENCE_TAG = "reference"  # every reference row's display name says so
_METRIC_LABELS = {
    "auc": "AUC", "macro_auc": "Macro-AUC", "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy",
    "mae": "MAE", "mse": "MSE", "cindex": "C-index", "dice": "Dice",
}

RC = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "figure.titlesize": 11, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.5, "lines.markersize": 4.5,
    "errorbar.capsize": 2, "savefig.dpi": 200, "pdf.fonttype": 42, "ps.fonttype": 42, "font.family": "DejaVu Sans",
    "figure.constrained_layout.use": True,
}


def _key(name: str) -> str:
    return str(name).strip().lower()


def backbone_color(name: str) -> str:
    """The fixed colour of a backbone (hash-based for names not in ``KNOWN_COLORS``)."""
    key = _key(name)
    if key in KNOWN_COLORS:
        return KNOWN_COLORS[key]
    return EXTRA_COLORS[zlib.crc32(key.encode()) % len(EXTRA_COLORS)]


def palette(names: Iterable[str]) -> dict[str, str]:
    """Colours for the backbones of one figure: fixed per name, collisions between unknown names resolved."""
    out: dict[str, str] = {}
    used = set()
    unknown = []
    for name in names:
        if _key(name) in KNOWN_COLORS:
            out[name] = KNOWN_COLORS[_key(name)]
            used.add(out[name])
        else:
            unknown.append(name)
    for name in sorted(set(unknown), key=_key):
        start = zlib.crc32(_key(name).encode()) % len(EXTRA_COLORS)
        for step in range(len(EXTRA_COLORS)):
            colour = EXTRA_COLORS[(start + step) % len(EXTRA_COLORS)]
            if colour not in used:
                break
        out[name] = colour
        used.add(colour)
    return out


def marker(name: str) -> str:
    key = _key(name)
    idx = _KNOWN_ORDER.index(key) if key in _KNOWN_ORDER else zlib.crc32(key.encode())
    return _MARKERS[idx % len(_MARKERS)]


def display_name(name: str, labels: Mapping[str, str] | None = None) -> str:
    """Label of a backbone in figures and tables.

    ``labels`` (e.g. from the workflow config) wins, matched exactly or case-insensitively; then
    the paper's spelling of known backbones; unknown names are shown as given. Colours stay keyed
    on the backbone name, so relabelling never changes a backbone's colour.
    """
    label = DISPLAY_NAMES.get(_key(name), str(name))
    if labels:
        lowered = {_key(k): v for k, v in labels.items()}
        if name in labels:
            label = str(labels[name])
        elif _key(name) in lowered:
            label = str(lowered[_key(name)])
    if is_reference(name):
        if _key(label) == _key(name):  # a config label left at its default (the key): the catalogue's name
            label = DISPLAY_NAMES.get(_key(name), label)
        if REFERENCE_TAG not in label.lower():
            label += f" ({REFERENCE_TAG})"
    return label


def linestyle(name: str) -> str:
    """Reference rows are dashed in line plots, encoders solid."""
    return "--" if is_reference(name) else "-"


def order_backbones(names: Iterable[str], reference: str | None = None) -> list[str]:
    """Reference first, then known backbones in the paper's order, then the rest alphabetically;
    the reference rows (prior, image statistics, oracle) last, after every encoder."""
    uniq = list(dict.fromkeys(str(n) for n in names))
    ref = [n for n in uniq if reference is not None and _key(n) == _key(reference)]
    known = sorted((n for n in uniq if n not in ref and _key(n) in _KNOWN_ORDER),
                   key=lambda n: _KNOWN_ORDER.index(_key(n)))
    rest = sorted((n for n in uniq if n not in ref and _key(n) not in _KNOWN_ORDER), key=_key)
    ordered = ref + known + rest
    return [n for n in ordered if not is_reference(n) or n in ref] + \
        [n for n in ordered if is_reference(n) and n not in ref]


def metric_label(metric: str) -> str:
    """Axis label of a metric: 'macro_auc' -> 'Macro-AUC', 'dice_WT' -> 'Dice (WT)'."""
    if metric.startswith("dice_"):
        return f"Dice ({metric[5:]})"
    return _METRIC_LABELS.get(metric, metric.replace("_", " "))


def ratio_label(ratio: float) -> str:
    return f"{100 * float(ratio):g}%"


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The house matplotlib style, scoped to a block (global rcParams are restored afterwards)."""
    with mpl.rc_context(RC):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, panel: tuple[float, float] = (3.2, 2.6),
               extra_height: float = 0.0, **subplot_kw) -> tuple[Figure, list]:
    """A pyplot-free figure with a grid of axes (returned as a flat list, row-major)."""
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows + extra_height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, [ax for row in axes for ax in row]


def output_paths(path: str | Path, formats: Sequence[str], replaced: Sequence[str]) -> list[Path]:
    """``path`` once per format: its suffix swapped for the format's when it is one of ``replaced``."""
    stem = Path(path)
    if stem.suffix.lower() in replaced:
        stem = stem.with_suffix("")
    return [stem.with_name(f"{stem.name}.{fmt}") for fmt in formats]


def save_figure(fig: Figure, path: str | Path, formats: Sequence[str] = ("png", "pdf"),
                dpi: int | None = None) -> list[Path]:
    """Write ``path`` (its suffix is replaced) once per format, each atomically; returns the paths.

    ``dpi`` sets the PNG resolution (default 200; the PDF is vector graphics).
    """
    written = []
    for fmt, target in zip(formats, output_paths(path, formats, (".png", ".pdf", ".svg"))):
        with atomic_path(target, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi or RC["savefig.dpi"], metadata=_metadata(fmt))
        written.append(target)
    return written


def _metadata(fmt: str) -> dict[str, str | None]:
    # no creation dates, so re-running the workflow gives byte-identical PDFs/PNGs
    if fmt == "pdf":
        return {"CreationDate": None, "Creator": "brainfm", "Producer": None}
    if fmt == "png":
        return {"Software": "brainfm"}
    return {}
