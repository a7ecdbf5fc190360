#!/usr/bin/env bash
# Run a command against a fresh one-host SLURM cluster, then tear the cluster down whatever happens:
#   tests/cluster/with_slurm.sh python -m pytest -m cluster tests/cluster
# The command sees SLURM_CONF (and SLURM_TEST_STATE, the cluster's state directory).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/brainfm-slurm.XXXXXX")
cleanup() {
    local rc=$?
    if [ "$rc" != 0 ] && [ -d "$STATE/log" ]; then
        echo "[with_slurm] exit $rc; last daemon log lines:" >&2
        tail -n 15 "$STATE"/log/slurmctld.log "$STATE"/log/slurmdbd.log >&2 2>/dev/null || true
    fi
    "$HERE/slurm_down.sh" "$STATE" --purge
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$HERE/slurm_up.sh" "$STATE" || exit 1
# shellcheck disable=SC1091
source "$STATE/env"
"$@"
