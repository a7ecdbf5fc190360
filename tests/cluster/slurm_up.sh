#!/usr/bin/env bash
# A one-host SLURM cluster for the cluster tests, from Debian's packages, on loopback.
#
#   tests/cluster/slurm_up.sh STATE_DIR      # install if missing, configure, start, wait for idle nodes
#   source STATE_DIR/env                     # SLURM_CONF etc. for sbatch/sacct/snakemake
#   tests/cluster/slurm_down.sh STATE_DIR    # stop every daemon started here
#
# Everything (configs, spool, logs, MariaDB data, munge key and socket) lives under STATE_DIR; no
# system service is touched and the ports are picked free at start, so a leftover or a second
# cluster cannot collide. Runs as root (CI and the dev containers are root).
#
# Layout: two compute nodes, node1 and node2, both slurmd processes on this host (127.0.0.1 with
# their own ports), so multi-node jobs (srun over 2 nodes) run for real. Each node declares more
# CPUs and memory than the host has (SlurmdParameters=config_overrides) so the test DAG's resource
# requests are schedulable on a 2-core machine; nothing is enforced (no cgroups:
# proctrack/linuxproc, task/none). Partitions: `cpu` (default) and `gpu`. There is no GPU: each
# node declares GRES `gpu:2` backed by two empty files (SLURM's gpu plugin ignores GPUs without a
# File=), which makes `--gpus=N` and `--gres=gpu:N` requests schedulable and accounted (sacct's
# AllocTRES shows gres/gpu); nothing opens the files and CUDA_VISIBLE_DEVICES stays unset.
# Job accounting (sacct, which the Snakemake SLURM plugin polls) goes through slurmdbd into a
# private MariaDB instance.
set -euo pipefail

STATE=${1:?usage: slurm_up.sh STATE_DIR}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
NODE_CPUS=${SLURM_TEST_NODE_CPUS:-16}
NODE_MEM_MB=${SLURM_TEST_NODE_MEM_MB:-64000}
NODE_GPUS=${SLURM_TEST_NODE_GPUS:-2}
CLUSTER=brainfm
ACCOUNT=brainfm

log() { echo "[slurm_up] $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "slurm_up.sh: must run as root (it installs packages and runs the SLURM daemons)" >&2
    exit 1
fi

# ------------------------------------------------------------------ packages
need=()
for pair in slurmctld:slurmctld slurmd:slurmd slurmdbd:slurmdbd sbatch:slurm-client munged:munge \
            mariadbd:mariadb-server; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    # Debian's postinst scripts would start system-wide services; keep them from doing so.
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
    if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CTLD_PORT=$(free_port); DBD_PORT=$(free_port); DB_PORT=$(free_port); N1_PORT=$(free_port); N2_PORT=$(free_port)

mkdir -p "$STATE"/{etc,log,run,ctld,spool,munge,mysql}
chmod 700 "$STATE/munge"

# ------------------------------------------------------------------ munge
dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$STATE/munge/munge.key"
MUNGE_SOCKET="$STATE/munge/munge.socket"
munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" --pid-file="$STATE/run/munged.pid" \
       --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed"

# ------------------------------------------------------------------ MariaDB (private instance)
mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=root --auth-root-authentication-method=socket \
                   --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1
DB_SOCKET="$STATE/run/mysqld.sock"
mariadbd --no-defaults --datadir="$STATE/mysql" --user=root --bind-address=127.0.0.1 --port="$DB_PORT" \
         --socket="$DB_SOCKET" --pid-file="$STATE/run/mariadbd.pid" --log-error="$STATE/log/mariadbd.log" \
         --innodb-buffer-pool-size=64M --skip-name-resolve &
for _ in $(seq 60); do [ -S "$DB_SOCKET" ] && break; sleep 0.5; done
[ -S "$DB_SOCKET" ] || { log "MariaDB did not start"; cat "$STATE/log/mariadbd.log" >&2; exit 1; }
DB_PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
mariadb --no-defaults --socket="$DB_SOCKET" -u root <<SQL
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# ------------------------------------------------------------------ configs
HOST=$(hostname -s)
cat > "$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$STATE/etc/slurmdbd.conf"

cat > "$STATE/etc/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CryptoType=crypto/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.%n.log
# no cgroups: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
MpiDefault=none
SwitchType=switch/none
# declared CPUs/memory exceed this host's; use the declared values instead of draining the node
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for slurmdbd connections this names the munge socket
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
# keep sbatch --comment (the Snakemake plugin's rule_<rule>_wildcards_<...>) in sacct
AccountingStoreFlags=job_comment
GresTypes=gpu
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=20
NodeName=node1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$N1_PORT CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB Gres=gpu:$NODE_GPUS State=UNKNOWN
NodeName=node2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$N2_PORT CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB Gres=gpu:$NODE_GPUS State=UNKNOWN
PartitionName=cpu Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=node1,node2 MaxTime=INFINITE State=UP
EOF

# Stand-in GPUs: SLURM's gpu plugin drops GPUs that have no File=, so each node's GPUs are empty
# regular files (nothing opens them: no cgroup device constraint). They make --gpus/--gres=gpu
# requests schedulable and accounted; jobs see no device (CUDA_VISIBLE_DEVICES stays unset).
mkdir -p "$STATE/dev"
files=()
for i in $(seq 0 $((NODE_GPUS - 1))); do : > "$STATE/dev/gpu$i"; files+=("$STATE/dev/gpu$i"); done
gpu_files=$(IFS=,; echo "${files[*]}")
cat > "$STATE/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=node1,node2 Name=gpu File=$gpu_files
EOF
cp /dev/null "$STATE/etc/cgroup.conf"

cat > "$STATE/env" <<EOF
export SLURM_CONF=$STATE/etc/slurm.conf
export SLURM_TEST_STATE=$STATE
EOF
export SLURM_CONF="$STATE/etc/slurm.conf"

# Clients inside jobs must find the config without SLURM_CONF: the Snakemake jobstep plugin drops
# every SLURM_* variable but the job's identity before its `srun`. So the default path points here,
# as on a real cluster's nodes (refusing to replace a real installation's file).
SYSTEM_CONF=/etc/slurm/slurm.conf
if [ -L "$SYSTEM_CONF" ] && [ ! -e "$SYSTEM_CONF" ]; then
    rm -f "$SYSTEM_CONF"  # left by a test cluster whose state directory is gone
fi
if [ -e "$SYSTEM_CONF" ]; then
    log "$SYSTEM_CONF exists ($(readlink -f "$SYSTEM_CONF")): another SLURM (or test cluster) owns this host"
    exit 1
fi
mkdir -p /etc/slurm
ln -s "$STATE/etc/slurm.conf" "$SYSTEM_CONF"
echo "$SYSTEM_CONF" > "$STATE/run/system-conf-link"

# ------------------------------------------------------------------ daemons
# slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF
slurmdbd
for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=tests Organization=brainfm >/dev/null
sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null

slurmctld -c -f "$STATE/etc/slurm.conf"
for n in node1 node2; do
    mkdir -p "$STATE/spool/$n"
    slurmd -N "$n" -f "$STATE/etc/slurm.conf"
done

for _ in $(seq 120); do
    idle=$(sinfo -h -N -p cpu -t idle -o '%N' 2>/dev/null | sort -u | wc -l)
    [ "$idle" -ge 2 ] && break
    sleep 0.5
done
if [ "$idle" -lt 2 ]; then
    log "nodes did not become idle:"; sinfo -N -l >&2 || true
    tail -n 30 "$STATE"/log/*.log >&2 || true
    exit 1
fi
sinfo >&2
log "cluster up: SLURM_CONF=$SLURM_CONF"
