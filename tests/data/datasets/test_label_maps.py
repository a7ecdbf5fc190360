"""Label maps from the registry agree with nnU-Net's own BraTS conversion and region handling."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from brainfm.data.datasets import BUILTIN_ENTRIES, load_dataset_entry
from brainfm.errors import ConfigError
from brainfm.data.datasets.labelmap import LabelMap, label_map_for

BENCHMARKS = {"brats2021": (1, 2, 4), "brats2023_men": (1, 2, 3), "brats2023_mets": (1, 2, 3),
              "brats2024_goat": (1, 2, 3)}


@pytest.mark.parametrize("name,values", BENCHMARKS.items())
def test_registry_label_maps_follow_supp_table_5(name, values):
    lm = label_map_for(name)
    assert lm.values == values
    ncr, ed, et = values
    assert lm.region_names == ("WT", "TC", "ET")
    assert [set(r.labels) for r in lm.regions] == [{ncr, ed, et}, {ncr, et}, {et}]


def _random_mask(values, shape=(9, 11, 7), seed=0):
    return np.random.default_rng(seed).choice((0, *values), size=shape).astype(np.uint8)


def test_brats2021_coding_equals_nnunet_conversion(tmp_path):
    """nnU-Net's Dataset137 converter (4 -> 3, 2 -> 1, 1 -> 2) is the independent reference."""
    import SimpleITK as sitk
    from nnunetv2.dataset_conversion.Dataset137_BraTS21 import copy_BraTS_segmentation_and_convert_labels_to_nnUNet

    mask = _random_mask((1, 2, 4))
    sitk.WriteImage(sitk.GetImageFromArray(mask), str(tmp_path / "in.nii.gz"))
    copy_BraTS_segmentation_and_convert_labels_to_nnUNet(str(tmp_path / "in.nii.gz"), str(tmp_path / "out.nii.gz"))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nii.gz")))
    np.testing.assert_array_equal(label_map_for("brats2021").to_nnunet(mask), reference)


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_region_coding_round_trips_through_nnunet_label_manager(name):
    """Region masks -> nnU-Net's LabelManager segmentation -> our regions == the raw mask's regions."""
    from nnunetv2.evaluation.evaluate_predictions import region_or_label_to_mask
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    lm = label_map_for(name)
    mask = _random_mask(lm.values, seed=3)
    truth = lm.raw_regions(mask)
    dj = lm.dataset_json_labels()
    manager = LabelManager(dj["labels"], dj["regions_class_order"])
    assert manager.has_regions
    probs = np.stack([truth[r].astype(np.float32) for r in lm.region_names])
    seg = manager.convert_probabilities_to_segmentation(probs)
    np.testing.assert_array_equal(seg, lm.to_nnunet(mask))
    ours = lm.nnunet_regions(seg)
    for region, nn_region in zip(lm.region_names, manager.foreground_regions):
        np.testing.assert_array_equal(ours[region], truth[region])
        np.testing.assert_array_equal(region_or_label_to_mask(seg, nn_region), truth[region])


def test_unknown_values_are_reported():
    lm = label_map_for("brats2021")
    mask = _random_mask((1, 2, 4))
    assert lm.unknown_values(mask) == []
    mask[0, 0, 0] = 3  # a BraTS 2023 code in a 2021 mask
    assert lm.unknown_values(mask) == [3]


def _map(regions, labels=(1, 2, 3)):
    return {"labels": [{"value": v, "name": f"L{v}"} for v in labels],
            "regions": [{"name": n, "labels": list(v)} for n, v in regions]}


@pytest.mark.parametrize("regions,message", [
    ((("WT", (1, 2, 3)), ("TC", (1, 4))), "undeclared"),
    ((("WT", (1, 3)), ("TC", (2, 3))), "nested"),
    ((("WT", (1, 2, 3)), ("TC", (1, 2, 3))), "nested"),
    ((("WT", (1, 2, 3)), ("WT", (1, 3))), "distinct"),
])
def test_bad_label_maps_are_config_errors(regions, message):
    with pytest.raises(ConfigError, match=message) as err:
        LabelMap.from_mapping(_map(regions), "my.yaml")
    assert "my.yaml" in str(err.value)


def test_registry_rejects_a_bad_segmentation_field(tmp_path):
    data = yaml.safe_load((BUILTIN_ENTRIES / "brats2021.yaml").read_text())
    data["segmentation"]["regions"][1]["labels"] = [1, 5]
    path = tmp_path / "brats2021.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="segmentation.*undeclared"):
        load_dataset_entry(path)
    data["segmentation"]["labels"][0]["value"] = 0  # background is not a label
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="segmentation"):
        load_dataset_entry(path)


def test_phantom_tumour_map_matches_its_generator():
    from brainfm.data.phantom import BRATS_LABELS

    lm = label_map_for("phantom_tumor")
    assert dict(zip((lab.name for lab in lm.labels), lm.values)) == BRATS_LABELS
    with pytest.raises(ConfigError, match="no segmentation label map"):
        label_map_for("phantom_brainage")
