"""Training logs: every loss term, lr, momentum, teacher temperature and throughput.

Written by the main process only, to ``work_dir/metrics.csv`` (one row per logged iteration)
and to TensorBoard (``work_dir/tb``), with a tqdm progress bar. On resume, rows and events
after the resumed iteration are dropped (CSV rewrite, TensorBoard ``purge_step``), so a killed
and resumed run has one clean history.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from brainfm.atomic import write_text

__all__ = ["Monitor", "read_curve"]

log = logging.getLogger("brainfm.ssl")


class Monitor:
    def __init__(self, work_dir: Path, enabled: bool, start_iter: int, total_iters: int, desc: str,
                 tensorboard: bool = True):
        self.enabled = enabled
        self.csv_path = Path(work_dir) / "metrics.csv"
        self._fields: list[str] | None = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        self._truncate_csv(start_iter)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(work_dir) / "tb"), purge_step=start_iter)
            except ImportError:  # tensorboard is a declared dependency; keep training if it is absent
                log.warning("tensorboard is not installed: logging to CSV only")
        self._bar = tqdm(total=total_iters, initial=start_iter, desc=desc, disable=None, dynamic_ncols=True)

    def _truncate_csv(self, start_iter: int) -> None:
        if not self.csv_path.exists():
            return
        with open(self.csv_path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        header, body = rows[0], rows[1:]
        kept = [r for r in body if r and int(float(r[0])) < start_iter]
        self._fields = header
        lines = [",".join(header)] + [",".join(r) for r in kept]
        write_text(self.csv_path, "\n".join(lines) + "\n")

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"iteration": iteration}
        row.update({k: (float(v) if v is not None else math.nan) for k, v in metrics.items()})
        if self._fields is None:
            self._fields = list(row)
            with open(self.csv_path, "w", newline="") as fh:
                csv.writer(fh).writerow(self._fields)
        with open(self.csv_path, "a", newline="") as fh:
            csv.writer(fh).writerow([_fmt(row.get(k, math.nan)) for k in self._fields])
        if self._tb is not None:
            for k, v in row.items():
                if k != "iteration":
                    self._tb.add_scalar(k, v, iteration)
        if self._bar is not None:
            shown = {k: f"{row[k]:.4g}" for k in ("loss", "lr", "img_per_s") if k in row}
            self._bar.set_postfix(shown, refresh=False)

    def step(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def read_curve(work_dir: Path) -> dict[str, list[float | None]]:
    """The logged history of a run (``work_dir/metrics.csv``) as columns: {name: [value per logged step]}.

    The CSV is the whole history even across resumes (rows after a resume point are dropped first),
    so this is what a summary and the report's training-curve figure read. Non-finite values -> None.
    """
    path = Path(work_dir) / "metrics.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        return {}
    header, body = rows[0], [r for r in rows[1:] if r]
    out: dict[str, list[float | None]] = {}
    for j, name in enumerate(header):
        col: list[float | None] = []
        for r in body:
            try:
                v = float(r[j])
            except (IndexError, ValueError):
                v = math.nan
            col.append(v if math.isfinite(v) else None)
        out[name] = col
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)
