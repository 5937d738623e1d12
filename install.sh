#!/usr/bin/env bash
# dpdk-oci-hook installer for Debian 12/13.
#
#   sudo ./install.sh            install (idempotent: running it twice gives the same result)
#   sudo ./install.sh --demo     install, then run two containers wired by the hook
#   sudo ./install.sh --dry-run  print what would change, change nothing
#   sudo ./install.sh --uninstall
#
# What it changes: Debian packages (DPDK, OVS-DPDK, runc, python3-venv), the ovs-vswitchd
# alternative (DPDK build), the 2 MiB hugepage pool, /opt/dpdk-oci-hook (a virtual
# environment with the project), /usr/local/bin/dpdk-oci-{hook,runtime}, /etc/dpdk-oci-hook/config.hcl
# (only if absent), and, when no OVS is running, a local OVS-DPDK switch with bridge br-dpdk.
set -euo pipefail

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${DPDK_OCI_HOOK_PREFIX:-/opt/dpdk-oci-hook}
VENV=$PREFIX/venv
BIN_LINK=${DPDK_OCI_HOOK_BIN_LINK:-/usr/local/bin/dpdk-oci-hook}
# the runtime wrapper goes beside it (docker/containerd configs and ctr --runc-binary name it)
RUNTIME_LINK=${DPDK_OCI_RUNTIME_BIN_LINK:-$(dirname "$BIN_LINK")/dpdk-oci-runtime}
CONF_DIR=/etc/dpdk-oci-hook
CONF=$CONF_DIR/config.hcl
STATE_FILE=$PREFIX/install-state
HUGEPAGES=${DPDK_OCI_HOOK_HUGEPAGES:-1024}  # 2 MiB pages in the host pool
BRIDGE=br-dpdk
OVS_SCRIPTS=/usr/share/openvswitch/scripts
SYSTEMD_DIR=${DPDK_OCI_HOOK_SYSTEMD_DIR:-/etc/systemd/system}
GC_UNIT=dpdk-oci-hook-gc
STATE_DIR=/run/dpdk-oci-hook
AGENT_UNIT=dpdk-oci-hook-agent
PACKAGES=(python3 python3-venv python3-pip dpdk dpdk-dev openvswitch-switch-dpdk runc gcc libc6-dev)

ACTION=install
DRY=0
DEMO=0
EDITABLE=0
SWITCH=1

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    cat <<EOF
Options:
  --demo        after installing, run the demo (two containers pass packets over the switch)
  --dry-run     print each change instead of making it
  --uninstall   remove what install added (packages and config.hcl are kept)
  --editable    install the project in editable mode (for developing it)
  --no-switch   do not start the embedded OVS-DPDK switch
  -h, --help    this text
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --demo) DEMO=1 ;;
        --dry-run) DRY=1 ;;
        --uninstall) ACTION=uninstall ;;
        --editable) EDITABLE=1 ;;
        --no-switch) SWITCH=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
run() {
    if [ "$DRY" = 1 ]; then printf '    would run: %s\n' "$*"; else "$@"; fi
}
write_file() {  # write_file PATH MODE < content
    local path=$1 mode=$2 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"; note "$path is up to date"; return 0
    fi
    if [ "$DRY" = 1 ]; then note "would write $path:"; sed 's/^/      | /' "$tmp"; rm -f "$tmp"; return 0; fi
    install -D -m "$mode" "$tmp" "$path"; rm -f "$tmp"; note "wrote $path"
}

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo ./install.sh)" >&2; exit 1; }

ovs_running() { ovs-vsctl --timeout=3 show >/dev/null 2>&1; }

install_packages() {
    step "Debian packages"
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then note "all present"; return; fi
    note "installing: ${missing[*]}"
    run apt-get update -q
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

select_ovs_dpdk() {
    step "ovs-vswitchd with DPDK"
    local dpdk=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
    if [ "$(readlink -f /etc/alternatives/ovs-vswitchd 2>/dev/null)" = "$dpdk" ]; then note "already selected"; return; fi
    run update-alternatives --set ovs-vswitchd "$dpdk"
}

setup_hugepages() {
    step "hugepages (2 MiB pool of at least $HUGEPAGES pages)"
    local knob=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
    local now; now=$(cat "$knob")
    if [ "$now" -lt "$HUGEPAGES" ]; then
        if [ "$DRY" = 1 ]; then note "would set $knob to $HUGEPAGES (now $now)"; else echo "$HUGEPAGES" >"$knob"; note "pool: $(cat "$knob") pages"; fi
    else
        note "pool has $now pages"
    fi
    if ! mountpoint -q /dev/hugepages; then
        run mkdir -p /dev/hugepages
        run mount -t hugetlbfs nodev /dev/hugepages
    fi
}

install_venv() {
    step "the project in $VENV"
    [ -x "$VENV/bin/python3" ] || run /usr/bin/python3 -m venv "$VENV"
    # with the extras: the Docker SDK that 'dpdk-oci-hook image build' uses, and gRPC for
    # 'dpdk-oci-hook device-plugin' (Kubernetes nodes); neither is imported by the hook itself
    local spec=("$SRC_DIR[images,kubernetes]")
    [ "$EDITABLE" = 1 ] && spec=(-e "$SRC_DIR[images,kubernetes]")
    run "$VENV/bin/pip" install -q --disable-pip-version-check "${spec[@]}"
    # image templates for 'dpdk-oci-hook image build'
    if ! diff -rq "$SRC_DIR/templates" "$PREFIX/templates" >/dev/null 2>&1; then
        run rm -rf "$PREFIX/templates"
        run cp -r "$SRC_DIR/templates" "$PREFIX/templates"
    fi
    # the hook runs on every container start: ship compiled bytecode
    run "$VENV/bin/python3" -m compileall -q "$VENV/lib"
    # the native hook client (hook/stage/hook_client.c): hook entries run it when it is beside
    # the interpreter; built aside and renamed, so a starting container never runs half a file
    run cc -O2 -Wall -o "$VENV/bin/dpdk-oci-hook-client.new" "$SRC_DIR/hook/stage/hook_client.c"
    run mv -f "$VENV/bin/dpdk-oci-hook-client.new" "$VENV/bin/dpdk-oci-hook-client"
    if [ "$(readlink "$BIN_LINK" 2>/dev/null)" != "$VENV/bin/dpdk-oci-hook" ]; then
        run ln -sfn "$VENV/bin/dpdk-oci-hook" "$BIN_LINK"
    fi
    if [ -e "$RUNTIME_LINK" ] && [ ! -L "$RUNTIME_LINK" ]; then
        note "kept $RUNTIME_LINK: a file that install did not make (the wrapper stays at $VENV/bin/dpdk-oci-runtime)"
    elif [ "$(readlink "$RUNTIME_LINK" 2>/dev/null)" != "$VENV/bin/dpdk-oci-runtime" ]; then
        run ln -sfn "$VENV/bin/dpdk-oci-runtime" "$RUNTIME_LINK"
    fi
}

pmd_core() {  # the last online CPU runs the switch's poller
    local online; online=$(cat /sys/devices/system/cpu/online)
    echo "${online##*[,-]}"
}

write_config() {
    step "host config $CONF"
    if [ -f "$CONF" ]; then note "kept (exists)"; return; fi
    local pmd pool
    pmd=$(pmd_core)
    if [ "$pmd" = 0 ]; then pool=0; else pool="0-$((pmd - 1))"; fi
    write_file "$CONF" 0644 <<EOF
# dpdk-oci-hook host configuration (HCL).  Check it with: dpdk-oci-hook config check
state_dir = "/run/dpdk-oci-hook"
log_file  = "/var/log/dpdk-oci-hook.log"

cpus {
  pool     = "$pool"   # cores the hook may give out, exclusively
  reserved = "$pmd"   # the switch's PMD core: never given out
}

hugepages {
  page_size = "2Mi"
  budget    = "1Gi"   # sum of all containers' hugepages
  grow_pool = false   # true: grow the kernel pool on demand, give it back on release
}

switch {
  backend       = "ovs"
  bridge        = "$BRIDGE"
  create_bridge = true
  timeout_s     = 5
}

limits {
  max_cpus      = 4
  max_ports     = 8
  max_queues    = 8
  max_hugepages = "1Gi"
}
EOF
}

dpdk_initialized() { [ "$(ovs-vsctl --timeout=3 get Open_vSwitch . dpdk_initialized 2>/dev/null)" = true ]; }
# the database keeps dpdk_initialized=true after ovs-vswitchd stops: ask the daemon itself too
vswitchd_running() { ovs-appctl --timeout=3 -t ovs-vswitchd version >/dev/null 2>&1; }

start_embedded_switch() {
    step "embedded OVS-DPDK switch"
    if [ "$SWITCH" = 0 ]; then note "skipped (--no-switch)"; return; fi
    export PATH=$PATH:$OVS_SCRIPTS
    if ovs_running; then
        note "an OVS database is running: using it"
    else
        run ovs-ctl --no-ovs-vswitchd --system-id=random start
        [ "$DRY" = 1 ] || echo "started_ovs=1" >>"$STATE_FILE"
    fi
    if [ "$DRY" = 0 ] && vswitchd_running && dpdk_initialized; then
        note "ovs-vswitchd runs with DPDK initialized"
    else
        if [ -z "$(ovs-vsctl --timeout=3 --if-exists get Open_vSwitch . other_config:dpdk-init 2>/dev/null)" ]; then
            local pmd; pmd=$(pmd_core)
            note "enabling DPDK in OVS: no NIC, 256 MiB, PMD on CPU $pmd sleeping when idle"
            run ovs-vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true \
                other_config:dpdk-extra="--no-pci" other_config:dpdk-socket-mem=256 \
                "other_config:pmd-cpu-mask=$(printf '0x%x' $((1 << pmd)))" other_config:pmd-maxsleep=10000
        fi
        if [ -d /run/systemd/system ] && systemctl is-active -q ovs-vswitchd 2>/dev/null; then
            run systemctl restart ovs-vswitchd
        elif [ "$DRY" = 0 ] && vswitchd_running; then
            run ovs-ctl --no-ovsdb-server restart
        else
            run ovs-ctl --no-ovsdb-server start
        fi
    fi
    if [ "$DRY" = 0 ]; then
        for _ in $(seq 1 30); do vswitchd_running && dpdk_initialized && break; sleep 1; done
        vswitchd_running && dpdk_initialized || { echo "install.sh: ovs-vswitchd did not come up with DPDK (see /var/log/openvswitch/ovs-vswitchd.log)" >&2; exit 1; }
        note "DPDK initialized"
    fi
    run ovs-vsctl --timeout=10 --may-exist add-br "$BRIDGE" -- set bridge "$BRIDGE" datapath_type=netdev
}

install_reconcile_timer() {
    step "systemd units: $GC_UNIT.timer (gc every minute), $AGENT_UNIT.service (the resident agent)"
    write_file "$SYSTEMD_DIR/$GC_UNIT.service" 0644 <<EOF
[Unit]
Description=dpdk-oci-hook: free what containers that are gone still hold
After=openvswitch-switch.service

[Service]
Type=oneshot
ExecStart=$BIN_LINK gc
EOF
    write_file "$SYSTEMD_DIR/$GC_UNIT.timer" 0644 <<EOF
[Unit]
Description=dpdk-oci-hook: reconcile every minute

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min

[Install]
WantedBy=timers.target
EOF
    write_file "$SYSTEMD_DIR/$AGENT_UNIT.service" 0644 <<EOF
[Unit]
Description=dpdk-oci-hook agent: runs hook stages with everything imported (the hook works without it)
After=openvswitch-switch.service

[Service]
ExecStart=$BIN_LINK agent
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF
    if [ -d /run/systemd/system ]; then
        run systemctl daemon-reload
        run systemctl enable --now "$GC_UNIT.timer"
        run systemctl enable "$AGENT_UNIT.service"
        run systemctl restart "$AGENT_UNIT.service"  # new code: a running agent would keep the old
    else
        note "systemd is not running here: run 'dpdk-oci-hook gc --watch' (and, for faster starts, 'dpdk-oci-hook agent') under your supervisor"
    fi
}

remove_reconcile_timer() {
    if [ -d /run/systemd/system ] && [ -f "$SYSTEMD_DIR/$GC_UNIT.timer" ]; then
        run systemctl disable --now "$GC_UNIT.timer" || true
    fi
    if [ -d /run/systemd/system ] && [ -f "$SYSTEMD_DIR/$AGENT_UNIT.service" ]; then
        run systemctl disable --now "$AGENT_UNIT.service" || true
    fi
    for unit in "$GC_UNIT.timer" "$GC_UNIT.service" "$AGENT_UNIT.service"; do
        if [ -f "$SYSTEMD_DIR/$unit" ]; then run rm -f "$SYSTEMD_DIR/$unit"; fi
    done
    if [ -d /run/systemd/system ]; then run systemctl daemon-reload || true; fi
}

state_on_tmpfs() {
    # The ledger is fsynced on every reservation: on a disk that costs milliseconds under the
    # lock, on tmpfs nothing.  Reservations do not outlive a reboot (no container does), so a
    # tmpfs loses nothing that matters.  Only the default state_dir is mounted here.
    step "state directory $STATE_DIR on its own tmpfs"
    if [ "$(stat -f -c %T "$STATE_DIR" 2>/dev/null || stat -f -c %T "$(dirname "$STATE_DIR")")" = tmpfs ]; then
        note "already on tmpfs"
        return
    fi
    if grep -q '"/run/dpdk-oci-hook"' "$CONF" 2>/dev/null || [ ! -f "$CONF" ]; then
        if [ -e "$STATE_DIR/ledger.json" ]; then
            note "kept on disk: it already holds a ledger (containers may be running); re-run after a reboot"
            return
        fi
        run mkdir -p "$STATE_DIR"
        run mount -t tmpfs -o size=64m,mode=0700 dpdk-oci-hook-state "$STATE_DIR"
        [ "$DRY" = 1 ] || echo "mounted_state=1" >>"$STATE_FILE"
    else
        note "config.hcl names another state_dir: left as it is"
    fi
}

check_config() {
    step "config check"
    run "$BIN_LINK" config check
}

do_install() {
    mkdir -p "$PREFIX"
    install_packages
    select_ovs_dpdk
    setup_hugepages
    install_venv
    write_config
    state_on_tmpfs
    start_embedded_switch
    check_config
    install_reconcile_timer
    if [ -f "$SRC_DIR/engines.sh" ]; then
        # shellcheck source=/dev/null
        . "$SRC_DIR/engines.sh"
        register_engines
    fi
    step "done"
    note "try: dpdk-oci-hook explain vhost-user=1 cpus=1 hugepages=64Mi"
    if [ "$DEMO" = 1 ]; then
        step "demo: two containers, one port each, packets across $BRIDGE"
        run "$BIN_LINK" demo
    fi
}

do_uninstall() {
    if [ -f "$SRC_DIR/engines.sh" ]; then
        # shellcheck source=/dev/null
        . "$SRC_DIR/engines.sh"
        unregister_engines
    fi
    remove_reconcile_timer
    step "removing $BIN_LINK, $RUNTIME_LINK and $PREFIX"
    if [ -x "$VENV/bin/dpdk-oci-hook" ] && [ -f "$CONF" ]; then run "$VENV/bin/dpdk-oci-hook" gc || true; fi
    if grep -q '^started_ovs=1' "$STATE_FILE" 2>/dev/null; then
        step "stopping the embedded OVS-DPDK switch"
        run ovs-vsctl --timeout=5 --if-exists del-br "$BRIDGE"
        run "$OVS_SCRIPTS/ovs-ctl" stop
    fi
    if grep -q '^mounted_state=1' "$STATE_FILE" 2>/dev/null && mountpoint -q "$STATE_DIR"; then
        run umount "$STATE_DIR" || note "$STATE_DIR is busy: left mounted"
    fi
    [ -L "$BIN_LINK" ] && run rm -f "$BIN_LINK"
    [ "$(readlink "$RUNTIME_LINK" 2>/dev/null)" = "$VENV/bin/dpdk-oci-runtime" ] && run rm -f "$RUNTIME_LINK"
    [ -d "$PREFIX" ] && run rm -rf "$PREFIX"
    note "kept: Debian packages, $CONF, the hugepage pool"
}

if [ "$ACTION" = install ]; then do_install; else do_uninstall; fi
