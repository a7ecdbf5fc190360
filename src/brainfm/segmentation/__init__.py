"""Tumour segmentation on frozen encoders through nnU-Net v2 (paper §2.1, §4.3.1; Fig. 2, 3a; Supp. Tables 5, 7).

nnU-Net v2 is used as a library: brainfm writes its raw dataset, runs its planning and
preprocessing, adds configurations to its plans, and instantiates its trainer and predictor;
no nnU-Net code is copied and no nnU-Net environment is needed from the user.

Modules, in pipeline order:

- label maps (raw mask values -> nested WT/TC/ET regions) are a dataset property:
  :mod:`brainfm.data.datasets.labelmap`;
- :mod:`.cases` -- cases from a manifest, checked and quarantined one by one;
- :mod:`.nnunet_env` -- the nnU-Net folders of a benchmark, set for the duration of a call;
- :mod:`.raw_dataset` -- the nnU-Net raw dataset (4 channels, region labels, test cases aside);
- :mod:`.planning` -- fingerprint, plans, ``2d_<P>``/``3d_<P>`` configurations, preprocessing, fold split;
- :mod:`.benchmark` -- :func:`prepare_benchmark`, the per-benchmark step;
- :mod:`.decoders`, :mod:`.network`, :mod:`.volume` -- frozen-encoder networks (2D ViTs, 3D baselines);
- :mod:`.trainer` -- the nnU-Net trainer subclass (AdamW, poly LR, no deep supervision, subsets);
- :mod:`.protocol` -- fold 0, nested label-ratio subsets, leakage checks;
- :mod:`.predict` -- sliding-window prediction and per-case region Dice;
- :mod:`.job` -- :func:`run_segmentation_job`, one (benchmark, backbone, ratio, seed) cell;
- :mod:`.steps` -- the workflow steps ``prepare_segmentation``, ``segment``, ``segment_perturbed``.

Everything that imports nnU-Net is imported lazily from here.
"""

import importlib

_EXPORTS = {
    "write_raw_dataset": "raw_dataset", "open_raw_dataset": "raw_dataset",
    "NnunetTree": "nnunet_env", "nnunet_environment": "nnunet_env",
    "ConfigurationRequest": "planning", "plan_and_preprocess": "planning",
    "PreparedBenchmark": "benchmark", "prepare_benchmark": "benchmark", "open_benchmark": "benchmark",
    "build_network": "network", "parameter_counts": "network", "default_blocks": "network",
    "TrainSettings": "trainer", "FrozenEncoderTrainer": "trainer", "PAPER_2D": "trainer", "PAPER_3D": "trainer",
    "PAPER_RATIOS": "protocol", "ratio_training_cases": "protocol", "check_pretraining_leakage": "protocol",
    "run_segmentation_job": "job",
    "prepare_segmentation": "steps", "segment": "steps", "segment_perturbed": "steps",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
