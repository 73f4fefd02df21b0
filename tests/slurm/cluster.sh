#!/usr/bin/env bash
# A real single-node Slurm cluster on loopback for costlaw's tests and CI:
# munged, MariaDB + slurmdbd (so `sacct` works: submitit needs it to see failed or cancelled jobs),
# slurmctld and slurmd, started by hand as root without systemd. Adapted from the tested recipe in
# ../shared/recipes/slurm-local (its README lists the pitfalls this script avoids).
#
# Usage:  tests/slurm/cluster.sh start|stop|status [DIR]     (DIR default: $COSTLAW_SLURM_DIR or /tmp/costlaw-slurm)
# Then:   source DIR/env.sh                                  (exports SLURM_CONF; jobs inherit it)
#
# start   installs the Debian packages if missing, writes the config (only while the daemons are down),
#         starts what is not running and waits until the node is idle. Idempotent.
# stop    cancels this cluster's jobs, then stops its daemons by the PIDs recorded under DIR/run.
# status  prints each daemon's state and `sinfo`; exit 0 only when the node is usable.
#
# Knobs: COSTLAW_SLURM_PORT_BASE (default 6817: slurmctld = BASE, slurmd = BASE+1, slurmdbd = BASE+2),
#        COSTLAW_SLURM_PARTITION (default debug), COSTLAW_SLURM_WAIT_S (default 60).
set -euo pipefail

CMD=${1:-}
DIR=$(realpath -m "${2:-${COSTLAW_SLURM_DIR:-/tmp/costlaw-slurm}}")
PORT_BASE=${COSTLAW_SLURM_PORT_BASE:-6817}
PARTITION=${COSTLAW_SLURM_PARTITION:-debug}
WAIT_S=${COSTLAW_SLURM_WAIT_S:-60}
NODE=localhost
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))

ETC=$DIR/etc
CONF=$ETC/slurm.conf
RUN=$DIR/run
LOG=$DIR/log
MUNGE_SOCK=$DIR/munge/munge.socket
DB_SOCK=$DIR/mysql/mysqld.sock
export SLURM_CONF=$CONF

T0=$(date +%s.%N)
elapsed() { echo "$(date +%s.%N) $T0" | awk '{printf "%.1f", $1 - $2}'; }
log() { echo "[costlaw-slurm +$(elapsed)s] $*"; }
die() { echo "[costlaw-slurm] ERROR: $*" >&2; exit 1; }

# alive NAME PIDFILE: PIDFILE names a live, non-zombie process called NAME (PID 1 here may not reap).
alive() {
  local name=$1 pf=$2 pid state
  pid=$(cat "$pf" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  [ "$state" != Z ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${limit}s waiting for $what (logs: $LOG)"
    sleep 0.1
  done
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_usable() {
  local st
  st=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null) || return 1
  case "$st" in idle | mixed | allocated | completing) return 0 ;; *) return 1 ;; esac
}

install_packages() {
  local p missing=""
  for p in munge slurmctld slurmd slurm-client slurmdbd mariadb-server; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  log "installing:$missing"
  apt-get update -q >/dev/null
  # shellcheck disable=SC2086  # the package list is meant to split
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
  log "packages installed"
}

write_config() {
  local node_line mem host_ip comm_params
  node_line=$(slurmd -C | head -1)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
  node_line=$(sed -e "s/^NodeName=[^ ]*/NodeName=$NODE/" -e "s/RealMemory=[0-9]*/RealMemory=$((mem * 95 / 100))/" \
    <<<"$node_line")
  # NoInAddrAny only when the hostname resolves to loopback (otherwise slurmd cannot bind; recipe pitfall 9)
  host_ip=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR==1{print $1}') || true
  if [[ $host_ip == 127.* ]]; then
    comm_params="CommunicationParameters=NoInAddrAny"
  else
    comm_params="# NoInAddrAny left out: hostname $(hostname) resolves to '${host_ip:-nothing}', not loopback"
  fi
  cat >"$CONF" <<EOF
# Written by costlaw tests/slurm/cluster.sh: one node on loopback, no cgroups, no systemd.
ClusterName=costlaw
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also bounds how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCK,cred_expire=10
$comm_params
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SrunPortRange=60001-60100
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerType=sched/backfill
# fast scheduling and requeue; dependents of a failed job are cancelled rather than left pending
SchedulerParameters=bf_interval=1,sched_interval=1,kill_invalid_depend
SlurmctldParameters=preempt_send_user_signal
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCK
ReturnToService=2
$node_line NodeAddr=127.0.0.1 NodeHostname=$NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=costlaw_slurm_acct_db
EOF
  chmod 600 "$ETC/slurmdbd.conf"  # slurmdbd refuses a readable config
  log "config written to $ETC"
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (the daemons run as root, no systemd)"
  install_packages
  mkdir -p "$ETC" "$RUN" "$LOG" "$DIR/state" "$DIR/spool" "$DIR/munge" "$DIR/mysql"
  chmod 755 "$DIR" "$DIR/munge"  # munged refuses a socket dir without o+x
  if ! alive slurmctld "$RUN/slurmctld.pid" && ! alive slurmd "$RUN/slurmd.pid"; then
    write_config
  fi
  printf 'export SLURM_CONF=%s\n' "$CONF" >"$DIR/env.sh"

  if ! alive munged "$RUN/munged.pid"; then
    [ -s "$ETC/munge.key" ] || mungekey --create --keyfile="$ETC/munge.key"
    chmod 600 "$ETC/munge.key"
    rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock" "$RUN/munged.pid"
    munged --socket="$MUNGE_SOCK" --key-file="$ETC/munge.key" --log-file="$LOG/munged.log" \
      --pid-file="$RUN/munged.pid" --seed-file="$DIR/munge/munged.seed"
    wait_for 10 munged bash -c "munge -S '$MUNGE_SOCK' -n | unmunge -S '$MUNGE_SOCK'"
    log "munged started (pid $(cat "$RUN/munged.pid"))"
  fi
  if ! alive mariadbd "$RUN/mariadbd.pid"; then
    if [ ! -d "$DIR/mysql/data/mysql" ]; then
      mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql/data" \
        --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1
    fi
    rm -f "$RUN/mariadbd.pid"
    setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql/data" --socket="$DB_SOCK" \
      --pid-file="$RUN/mariadbd.pid" --skip-networking --log-error="$LOG/mariadb.log" \
      --innodb-buffer-pool-size=128M --innodb-log-file-size=16M --innodb-lock-wait-timeout=900 \
      </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadbd mariadb --no-defaults -S "$DB_SOCK" -uroot -e 'select 1'
    wait_for 5 mariadbd-pidfile test -s "$RUN/mariadbd.pid"
    log "mariadbd started (pid $(cat "$RUN/mariadbd.pid"))"
  fi
  if ! alive slurmdbd "$RUN/slurmdbd.pid"; then
    rm -f "$RUN/slurmdbd.pid"
    MYSQL_UNIX_PORT=$DB_SOCK slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for 30 "slurmdbd on port $DBD_PORT" tcp_open "$DBD_PORT"
    log "slurmdbd started (pid $(cat "$RUN/slurmdbd.pid"))"
  fi
  if ! alive slurmctld "$RUN/slurmctld.pid"; then
    rm -f "$RUN/slurmctld.pid"
    slurmctld -f "$CONF"
    wait_for 30 "slurmctld on port $CTLD_PORT" scontrol ping
    wait_for 10 slurmctld-pidfile test -s "$RUN/slurmctld.pid"
    log "slurmctld started (pid $(cat "$RUN/slurmctld.pid"))"
  fi
  if ! alive slurmd "$RUN/slurmd.pid"; then
    rm -f "$RUN/slurmd.pid"
    slurmd -f "$CONF" -N "$NODE"
    wait_for 10 slurmd-pidfile test -s "$RUN/slurmd.pid"
    log "slurmd started (pid $(cat "$RUN/slurmd.pid"))"
  fi
  wait_for "$WAIT_S" "node $NODE to be idle" node_usable
  # sacct answers only once slurmctld has registered the cluster with slurmdbd
  wait_for 30 "sacct" sacct -n -X -S now
  log "ready: $(sinfo -h -N -n "$NODE" -o '%N %T cpus=%c mem=%mMB')"
  echo "source $DIR/env.sh    # export SLURM_CONF=$CONF"
}

stop_one() {
  local name=$1 pf=$2 pid i
  if ! alive "$name" "$pf"; then
    rm -f "$pf"
    return 0
  fi
  pid=$(cat "$pf")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    alive "$name" "$pf" || break
    sleep 0.1
  done
  if alive "$name" "$pf"; then
    echo "[costlaw-slurm] $name (pid $pid) ignored SIGTERM for 20 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$pf"
  echo "[costlaw-slurm] stopped $name (pid $pid)"
}

stop() {
  local jobs i
  if alive slurmctld "$RUN/slurmctld.pid"; then
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ') || true
    if [ -n "${jobs// /}" ]; then
      echo "[costlaw-slurm] cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for ((i = 0; i < 300; i++)); do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
  stop_one slurmd "$RUN/slurmd.pid"
  stop_one slurmctld "$RUN/slurmctld.pid"
  stop_one slurmdbd "$RUN/slurmdbd.pid"
  stop_one mariadbd "$RUN/mariadbd.pid"
  stop_one munged "$RUN/munged.pid"
}

status() {
  local d ok=0
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    if alive "$d" "$RUN/$d.pid"; then
      echo "$d: running (pid $(cat "$RUN/$d.pid"))"
    else
      echo "$d: stopped"
      ok=1
    fi
  done
  if [ $ok = 0 ] && node_usable; then
    sinfo -h -N -n "$NODE" -o '%N %T cpus=%c mem=%mMB'
    echo "SLURM_CONF=$CONF"
    return 0
  fi
  echo "not usable; start it with: $0 start $DIR"
  return 1
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac
