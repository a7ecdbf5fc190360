#!/usr/bin/env bash
# Stop the test cluster that slurm_up.sh started in STATE_DIR: cancel its jobs, stop every daemon
# it started (by their pid files, nothing else) and, with --purge, delete STATE_DIR.
set -uo pipefail

STATE=${1:?usage: slurm_down.sh STATE_DIR [--purge]}
PURGE=${2:-}
[ -d "$STATE" ] || exit 0
STATE=$(cd "$STATE" && pwd)
export SLURM_CONF="$STATE/etc/slurm.conf"

if [ -f "$SLURM_CONF" ] && [ -f "$STATE/run/slurmctld.pid" ]; then
    timeout 20 scancel --full -u root >/dev/null 2>&1 || true
fi

stop() {  # stop the process in pid file $1, waiting up to 15 s before SIGKILL
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile" 2>/dev/null) || return 0
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    rm -f "$pidfile"
}

for f in "$STATE"/run/slurmd.*.pid; do stop "$f"; done
stop "$STATE/run/slurmctld.pid"
stop "$STATE/run/slurmdbd.pid"
stop "$STATE/run/mariadbd.pid"
stop "$STATE/run/munged.pid"

# the default-path link to this cluster's config, if it is still ours
if [ -f "$STATE/run/system-conf-link" ]; then
    link=$(cat "$STATE/run/system-conf-link")
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$STATE/etc/slurm.conf" ]; then rm -f "$link"; fi
    rm -f "$STATE/run/system-conf-link"
fi

if [ "$PURGE" = "--purge" ]; then
    rm -rf "$STATE"
fi
exit 0
