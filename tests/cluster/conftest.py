"""A running SLURM cluster (``make test-cluster`` starts one with tests/cluster/with_slurm.sh).

Without a cluster (no SLURM_CONF, or sinfo failing) the tests are skipped, unless
BRAINFM_REQUIRE_SLURM=1 (set by ``make test-cluster``), where that is a failure.
"""

from __future__ import annotations

import os

import pytest

from slurm_helpers import cluster_error


@pytest.fixture(scope="session")
def slurm() -> None:
    err = cluster_error()
    if err:
        if os.environ.get("BRAINFM_REQUIRE_SLURM") == "1":
            pytest.fail(err)
        pytest.skip(err)
