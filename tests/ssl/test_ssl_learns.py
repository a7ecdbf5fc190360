"""SSL learns: probes on the pretrained demo encoder beat the same architecture at random init.

Slow (phantom generation, preprocessing and a few hundred CPU iterations): ``pytest -m slow``.
"""

from __future__ import annotations

import json

import pytest

from brainfm.ssl.evaluate import ssl_learning_evidence

DEMO = {
    "arch_overrides": {"embed_dim": 96, "depth": 4, "num_heads": 3},
    "global_size": 64, "local_size": 32, "n_local": 4,
    "n_prototypes": 1024, "head_hidden": 256, "head_bottleneck": 64,
    "iters": 200, "warmup_iters": 20, "batch_size": 32, "lr": 1e-3, "lr_scaling": "none",
    "momentum": 0.95, "centering": "softmax", "teacher_temp_warmup_iters": 60, "freeze_last_layer_iters": 0,
    "num_workers": 1, "checkpoint_every": 100, "log_every": 10,
}


@pytest.mark.slow
def test_pretrained_probe_beats_random_init(tmp_path):
    ev = ssl_learning_evidence(tmp_path, DEMO, n_pretrain=40, n_probe=60, label="age", binarize=True)
    pre, rnd = ev["scores"]["pretrained"], ev["scores"]["random_init"]
    print(json.dumps(ev["scores"], indent=1))
    assert pre["n"] == rnd["n"] >= 50
    assert pre["knn_balanced_accuracy"] > rnd["knn_balanced_accuracy"]
    assert max(pre["knn_balanced_accuracy"], pre["linear_balanced_accuracy"]) > 0.6
