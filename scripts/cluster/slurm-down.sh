#!/usr/bin/env bash
# Stop what slurm-up.sh started: slurmd, slurmctld, and munged if slurm-up started it (a munged that
# was already running stays). Removes $MBREC_SLURM_DIR so the next start is clean.
set -uo pipefail
DIR=${MBREC_SLURM_DIR:-/tmp/mbrec-slurm}
export SLURM_CONF=$DIR/slurm.conf
stop() {  # stop the daemon whose pid file is $1
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
}
[ -f "$SLURM_CONF" ] && scancel --user=root >/dev/null 2>&1
stop "$DIR/run/slurmd.pid"
stop "$DIR/run/slurmctld.pid"
if [ -f "$DIR/run/munged.ours" ]; then
  stop /run/munge/munged.pid
fi
rm -rf "$DIR"
echo "slurm-down: stopped" >&2
