"""Every workflow job is a fresh process: a step imports only what it uses (torch/timm cost seconds each)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "monai", "sklearn", "pandas", "matplotlib", "scipy")


def _loaded(code: str) -> set[str]:
    probe = code + f"\nimport sys, json; print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize("code, allowed", [
    ("import brainfm.cli; brainfm.cli.build_parser()", set()),  # `brainfm --help`, argument parsing
    ("import brainfm.stats.runners, brainfm.report.build", {"pandas", "matplotlib", "scipy"}),
    ("import brainfm.report.pretrain_curves", {"pandas", "matplotlib", "scipy"}),  # the report package
    ("import brainfm.analysis.knn, brainfm.analysis.cka, brainfm.tasks.data, brainfm.tasks.runs\n"
     "from brainfm.features import FeatureStore", {"pandas", "scipy"}),  # kNN and CKA jobs read stores only
    ("import brainfm.models.baselines.brainiac", set(HEAVY) - {"timm"}),  # 3D baselines: MONAI, not timm
])
def test_step_imports_stay_lean(code, allowed):
    extra = _loaded(code) - allowed
    assert not extra, f"{code!r} imports {sorted(extra)}"
