# shellcheck shell=bash
# vm-guest.sh - what scripts/vmtest.sh puts into the guest, sourced by it:
# the initramfs's /init (stage 1), PID 1 in the guest root (stage 2), the
# command script, and with --systemd the unit that runs it. Each reports
# "command starts at uptime" and PDSCP_VMTEST_EXIT=<status> on the console
# (ttyS0), which vmtest.sh reads.


# Stage 1, the initramfs's /init (busybox sh): load the boot modules, assemble the
# guest root (9p host root + tmpfs overlay + API filesystems) and switch into it.
write_guest_init() {
    cat >"$1" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/ttyS0 2>&1

fail() {
    echo "vmtest-init: FATAL: $*"
    echo "PDSCP_VMTEST_EXIT=125"
    poweroff -f
}

. /vmtest/config   # KVER MODDIR ROOTDIR CWD BOOT_SYSTEMD
for m in $(cat /vmtest/modules); do
    insmod "/modules/$m" || fail "insmod $m"
done

R=/mnt/root
mkdir -p /mnt/host /mnt/rw $R
# cache=loose: the export is read-only and short-lived, and caching makes exec over 9p
# much faster under TCG.
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /mnt/host ||
    fail "mount host root over 9p"
mount -t tmpfs -o mode=0755 rw /mnt/rw
mkdir /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/host$ROOTDIR,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay $R ||
    fail "mount overlay"
# The guest kernel's own modules (depmod'ed on the host), so modprobe works inside.
mkdir -p "$R/lib/modules/$KVER"
mount --bind "/mnt/host$MODDIR" "$R/lib/modules/$KVER" || fail "bind $MODDIR"
if [ -n "$ROOTDIR" ]; then
    # Another root than the host's: the command's directory is bound in.
    mkdir -p "$R$CWD"
    mount --bind "/mnt/host$CWD" "$R$CWD" || fail "bind $CWD"
fi

if [ "$BOOT_SYSTEMD" = 1 ]; then
    # A whole system: systemd mounts the API file systems (bpffs included) itself
    # and runs the command as a service (/vmtest/run, see write_guest_systemd_unit).
    mkdir -p $R/vmtest $R/etc/systemd/system/multi-user.target.wants
    cp /vmtest/cmd /vmtest/run $R/vmtest/
    cp /vmtest/pdscp-vmtest.service $R/etc/systemd/system/
    ln -sf ../pdscp-vmtest.service $R/etc/systemd/system/multi-user.target.wants/
    exec switch_root $R /lib/systemd/systemd
fi

mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $R/run
mount -t bpf -o mode=0700 bpf $R/sys/fs/bpf || fail "mount bpffs"
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null

# Stage 2 runs from the new root's /run with its own busybox.
mkdir -p $R/run/vmtest/bin
cp /bin/busybox /vmtest/stage2 /vmtest/cmd $R/run/vmtest/
# PID 1 itself must chroot (not a child): kernel threads share its root, and the
# kernel runs /sbin/modprobe for module autoloading (e.g. "ip link add type veth")
# relative to that root.
exec chroot $R /run/vmtest/busybox sh /run/vmtest/stage2
INIT
    chmod 755 "$1"
}

# Stage 2, PID 1 inside the guest root (busybox sh): run COMMAND with its output on
# ttyS1/ttyS2, report its status on the console, power off.
write_guest_stage2() {
    cat >"$1" <<'STAGE2'
/run/vmtest/busybox --install -s /run/vmtest/bin
export PATH=/run/vmtest/bin
hostname vmtest
ip link set lo up
# Open the output ports once and keep them open: reopening a serial tty while an
# earlier close is still in progress can fail. ("command" keeps a failed redirection
# from killing this shell, which is PID 1.)
for try in 1 2 3 4 5 6 7 8 9 10; do
    command exec 3>/dev/ttyS1 4>/dev/ttyS2 && break
    sleep 0.2
done
if ! { true >&3 && true >&4; } 2>/dev/null; then
    echo "vmtest-init: FATAL: cannot open the output ports /dev/ttyS1 /dev/ttyS2"
    echo "PDSCP_VMTEST_EXIT=125"
    poweroff -f
fi
stty raw -echo <&3  # no \n -> \r\n translation
stty raw -echo <&4
echo "vmtest-init: command starts at uptime $(cut -d' ' -f1 /proc/uptime) s"
env -i /bin/bash --noprofile --norc /run/vmtest/cmd </dev/null >&3 2>&4 3>&- 4>&-
rc=$?
echo "vmtest-init: command ended at uptime $(cut -d' ' -f1 /proc/uptime) s (status $rc)"
kill -9 -1 2>/dev/null  # leftovers must not hold the output ports open
sleep 0.2
echo "PDSCP_VMTEST_EXIT=$rc"
# Closing the last fd of a tty waits until its output has been sent.
exec 3>&- 4>&-
sync
poweroff -f
STAGE2
}

# Bash script run inside the chroot: environment, cwd, then exec COMMAND.
write_guest_command() {
    local out=$1 path="$STD_PATH" dir var
    # The standard dirs first, then the host's own PATH entries (e.g. ~/.cargo/bin).
    local -a host_path
    IFS=: read -r -a host_path <<<"${PATH:-}"
    for dir in "${host_path[@]}"; do
        [[ -n $dir && :$path: != *:"$dir":* ]] && path+=:$dir
    done
    {
        printf 'export PATH=%q HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8\n' "$path"
        for var in "${GUEST_ENV[@]}"; do
            if [[ $var == *=* ]]; then
                printf 'export %s=%q\n' "${var%%=*}" "${var#*=}"
            elif [[ -v $var ]]; then
                printf 'export %s=%q\n' "$var" "${!var}"
            fi
        done
        printf 'cd -- %q || exit 125\n' "$PWD"
        printf 'exec'; printf ' %q' "${COMMAND[@]}"; printf '\n'
    } >"$out"
}

# With --systemd: the service that runs COMMAND once the system is up, and its
# wrapper (/vmtest/run): output on ttyS1/ttyS2, exit status on the console, power off.
write_guest_systemd_unit() {
    cat >"$1/pdscp-vmtest.service" <<'UNIT'
[Unit]
Description=scripts/vmtest.sh command
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh /vmtest/run
StandardInput=null
StandardOutput=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
    cat >"$1/run" <<'RUN'
stty -F /dev/ttyS1 raw -echo
stty -F /dev/ttyS2 raw -echo
echo "vmtest: command starts at uptime $(cut -d' ' -f1 /proc/uptime) s" >/dev/ttyS0
env -i /bin/bash --noprofile --norc /vmtest/cmd </dev/null >/dev/ttyS1 2>/dev/ttyS2
rc=$?
echo "vmtest: command ended at uptime $(cut -d' ' -f1 /proc/uptime) s (status $rc)" >/dev/ttyS0
echo "PDSCP_VMTEST_EXIT=$rc" >/dev/ttyS0
sync
systemctl poweroff --force --force
RUN
}
