#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine (loopback), with two fake GPUs,
# for the profile tests (tests/test_slurm_profile.py). Needs root; idempotent.
set -euo pipefail
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  "$(dirname "$0")/apt-install.sh" slurm-wlm munge
fi
if sinfo -h -o "%T %G" 2>/dev/null | grep -q "idle gpu:2"; then echo "slurm: already up"; exit 0; fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.85)}' /proc/meminfo)
conf=/etc/slurm
mkdir -p $conf /run/munge /run/slurm /var/spool/slurmctld /var/log/slurm /var/spool/slurmd
chown munge:munge /run/munge; chown slurm:slurm /run/slurm /var/spool/slurmctld /var/log/slurm
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key

cat > $conf/slurm.conf <<CONF
ClusterName=loopback
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
NodeName=$host CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# Two fake GPUs: slurmd needs a device file per gres, or it drains the node. Character devices
# like /dev/null, numbered as NVIDIA's are, so that SLURM hands each job its own
# CUDA_VISIBLE_DEVICES (0 or 1) as it does on a real GPU node.
for i in 0 1; do [ -e /dev/wmrepair-fakegpu$i ] || mknod /dev/wmrepair-fakegpu$i c 1 3; done
echo "NodeName=$host Name=gpu File=/dev/wmrepair-fakegpu[0-1]" > $conf/gres.conf

pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
# Daemons of an older configuration (not up with gpu:2, above) restart with this one.
pkill -x slurmd || true
pkill -x slurmctld || true
sleep 1
slurmctld
slurmd
for _ in $(seq 30); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then echo "slurm: node $host idle ($cpus CPUs, ${mem} MB, gpu:2 fake)"; exit 0; fi
  sleep 1
done
echo "slurm: node did not come up; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
