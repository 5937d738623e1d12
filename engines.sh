# Container engine registration for install.sh (sourced; uses its VENV, CONF, DRY, SRC_DIR,
# step and note).  The work is done by hook.admin.engines: drop-ins that keep existing settings,
# a backup of every file it edits, and an exact undo.
#
#   podman, CRI-O : hooks.d files in /usr/share/containers/oci/hooks.d
#   Docker        : daemon.json runtimes.dpdk -> $VENV/bin/dpdk-oci-runtime (a dockerd older
#                   than 24 drops annotations: registering says so, and where a newer one is)
#   containerd    : CRI runtime "dpdk" (BinaryName = the wrapper) in config.toml
# shellcheck shell=bash

# ENGINES_ROOT (default /) prefixes every engine config path and ENGINES (e.g. "docker,podman")
# limits the engines: both are for tests and image builds.
_engines() {  # _engines register|unregister
    local args=("$1" --python "$VENV/bin/python3" --config "${CONF:-/etc/dpdk-oci-hook/config.hcl}"
        --templates "$SRC_DIR/templates/hooks.d" --root "${ENGINES_ROOT:-/}")
    [ -n "${ENGINES:-}" ] && args+=(--engines "$ENGINES")
    [ "${DRY:-0}" = 1 ] && args+=(--dry-run)
    if [ ! -x "$VENV/bin/python3" ]; then
        if [ "${DRY:-0}" = 1 ] && [ "$1" = register ]; then
            note "would register with the container engines once $VENV exists"
            return 0
        fi
        note "$VENV/bin/python3 is missing: skipped"
        return 0
    fi
    "$VENV/bin/python3" -I -m hook.admin.engines "${args[@]}"
}

register_engines() {
    step "container engines (podman, CRI-O, Docker, containerd)"
    _engines register
}

unregister_engines() {
    step "container engines: removing our registrations"
    _engines unregister
}
