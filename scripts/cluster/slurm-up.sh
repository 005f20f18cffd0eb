#!/usr/bin/env bash
# Start a single-node Slurm on this machine (munged + slurmctld + slurmd) for `make test-cluster`.
# Needs root. Installs Debian's slurm-wlm and munge if missing. Everything Slurm writes goes under
# $MBREC_SLURM_DIR (default /tmp/mbrec-slurm); clients find the config through SLURM_CONF:
#   eval "$(scripts/cluster/slurm-up.sh)"     # prints: export SLURM_CONF=...
# No cgroups (proctrack/linuxproc, task/none) and no accounting daemon: it runs in containers too.
set -euo pipefail
DIR=${MBREC_SLURM_DIR:-/tmp/mbrec-slurm}
HOST=$(hostname -s)
log() { echo "slurm-up: $*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq slurm-wlm munge >&2
fi

mkdir -p "$DIR"/{state,spool,log,run}
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$DIR/slurm.conf" <<CONF
ClusterName=mbrec-local
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MpiDefault=none
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$DIR/slurm.conf

# munge: a key (the package creates one; make it if missing) and the daemon, as the munge user
if [ ! -s /etc/munge/munge.key ]; then
  (command -v mungekey >/dev/null && mungekey --create --keyfile=/etc/munge/munge.key) \
    || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n >/dev/null 2>&1; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  touch "$DIR/run/munged.ours"  # slurm-down.sh stops only a munged that we started
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null || { log "munge does not work"; exit 1; }

if ! scontrol ping >/dev/null 2>&1; then
  log "starting slurmctld"
  slurmctld -f "$SLURM_CONF"
fi
if [ ! -s "$DIR/run/slurmd.pid" ] || ! kill -0 "$(cat "$DIR/run/slurmd.pid")" 2>/dev/null; then
  log "starting slurmd"
  slurmd -f "$SLURM_CONF"
fi
for _ in $(seq 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
  case "$state" in idle|mix|alloc) break ;; esac
  sleep 0.5
done
case "$state" in
  idle|mix|alloc) log "node $HOST is $state ($CPUS CPUs, ${MEM_MB} MB)" ;;
  *) log "node did not come up (state '${state:-none}'); see $DIR/log"; tail -20 "$DIR"/log/*.log >&2; exit 1 ;;
esac
echo "export SLURM_CONF=$SLURM_CONF"
