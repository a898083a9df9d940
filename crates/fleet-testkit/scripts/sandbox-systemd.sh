#!/bin/bash
# usage: sandbox-systemd.sh DIR [NETNS]
# From the test environment notes of this project (a verified recipe), kept with every protection;
# added: a DIR/shared directory, and --kill-child (the sandbox dies with the unshare process).
# Boots the host's systemd as PID 1 of new pid/mount/uts/ipc/cgroup(/net) namespaces on an overlay of the host
# root (changes go to a tmpfs), so nothing it does touches the host's files. Its /run is a tmpfs seeded with DIR/run,
# reached from the host as /proc/<pid 1>/root/run (the bus socket, the journal); DIR/shared is seen at the same path
# inside. Stop: kill -s SIGRTMIN+4 <pid 1>.
set -euo pipefail
D=$1; NETNS=${2:-}; NAME=$(basename "$D")
# Its own cgroup2 subtree: where cgroup2 is mounted (hybrid hosts: .../unified).
if [ -d /sys/fs/cgroup/unified ]; then CG=/sys/fs/cgroup/unified/test-systemd-$NAME; else CG=/sys/fs/cgroup/test-systemd-$NAME; fi
mkdir -p "$D/run/systemd/system" "$D/run/systemd/journald.conf.d" "$D/ovl" "$D/root" "$D/shared"
: > "$D/console.log"; : > "$D/pid1-console.log"
printf '[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToWall=no\nForwardToConsole=no\n' > "$D/run/systemd/journald.conf.d/test.conf"
ln -sf /dev/null "$D/run/systemd/system/timers.target"
printf '[Unit]\nDescription=test boot target\nWants=basic.target dbus.socket dbus.service\nAfter=basic.target\n' > "$D/run/systemd/system/test-boot.target"
cat > "$D/inner.sh" <<EOS
set -e
R=$D/root
mount -t tmpfs -o mode=755 tmpfs $D/ovl
mkdir -p $D/ovl/upper $D/ovl/work
mount -t overlay overlay -o lowerdir=/,upperdir=$D/ovl/upper,workdir=$D/ovl/work \$R
mount -t proc -o nosuid,nodev,noexec proc \$R/proc
mount --bind \$R/proc/sys \$R/proc/sys; mount -o remount,bind,ro \$R/proc/sys
mount --bind /sys \$R/sys; mount -o remount,bind,ro \$R/sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 \$R/sys/fs/cgroup
# /run is a tmpfs, as on a machine (files there cost what they cost there), seeded with DIR/run.
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs \$R/run; cp -a $D/run/. \$R/run/
# Its own /tmp first: DIR may be under the host's /tmp, and DIR/shared is bound below it.
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs \$R/tmp
# DIR/shared is the same directory at the same path inside and out (unit files written from outside).
mkdir -p \$R$D/shared; mount --bind $D/shared \$R$D/shared
mount -t tmpfs -o mode=755,nosuid tmpfs \$R/dev
for n in null zero full random urandom tty; do touch \$R/dev/\$n; mount --bind /dev/\$n \$R/dev/\$n; done
mkdir \$R/dev/pts \$R/dev/shm; touch \$R/dev/console; mount --bind $D/pid1-console.log \$R/dev/console
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts \$R/dev/pts; ln -s pts/ptmx \$R/dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs \$R/dev/shm
cat /proc/sys/kernel/random/uuid | tr -d - > \$R/etc/machine-id
echo test-$NAME > \$R/etc/hostname; hostname test-$NAME
cd \$R; mount --move . /
exec chroot . setpriv --bounding-set -sys_time,-sys_module,-sys_rawio,-wake_alarm -- \
  env -i container=test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=test-boot.target --log-target=journal-or-kmsg --show-status=no
EOS
mkdir -p "$CG"
NETWRAP=(); NETFLAG=--net
if [ -n "$NETNS" ]; then NETWRAP=(ip netns exec "$NETNS"); NETFLAG=; fi
exec setsid bash -c 'echo $$ > "$1"/cgroup.procs; shift; exec "$@"' _ "$CG" \
  "${NETWRAP[@]}" unshare --pid --fork --kill-child --mount --uts --ipc --cgroup $NETFLAG --propagation private \
  /bin/bash "$D/inner.sh" >> "$D/console.log" 2>&1 < /dev/null
