"""The segmentation steps' own logic (the steps end to end run in tests/workflow and test_training)."""

from __future__ import annotations

import pytest

from brainfm.config import DatasetSpec
from brainfm.errors import ConfigError
from brainfm.segmentation.steps import prepare_segmentation, registry_split


def test_held_out_fraction_comes_from_the_registry_entry_of_a_real_dataset():
    real = DatasetSpec.from_dict({"name": "glioma", "source": "local", "registry": "brats2021"})
    assert registry_split(real) == (0.2, 0)
    phantom = DatasetSpec.from_dict({"name": "phantom_tumor", "source": "phantom"})
    assert registry_split(phantom) == (None, 0)  # the phantom manifest fixes its own split


def test_the_benchmark_marker_must_be_prepared_json(tmp_path):
    phantom = DatasetSpec.from_dict({"name": "phantom_tumor", "source": "phantom"})
    with pytest.raises(ConfigError, match="must be named prepared.json"):
        prepare_segmentation(phantom, tmp_path / "manifest.parquet", tmp_path / "done.json", configurations=["2d_48"])
