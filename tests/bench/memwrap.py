"""Peak memory of a hook run: ``memwrap.py OUT LABEL -- ARGV...`` runs ARGV (stdin passed
through), reaps it with wait4 and appends ``{"label", "maxrss_kib", "rc"}`` to OUT.

wait4's ``ru_maxrss`` is the child's own peak resident set, or that of a descendant it
reaped (the hook's forked mount helper, ovs-vsctl) if that was larger.  Registered as the
OCI hook entry by the memory scenario; the wrapper's own memory is not counted.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    out, label, sep, *argv = sys.argv[1:]
    if sep != "--" or not argv:
        sys.stderr.write("usage: memwrap.py OUT LABEL -- ARGV...\n")
        return 2
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (json.dumps({"label": label, "maxrss_kib": usage.ru_maxrss, "rc": rc}) + "\n").encode())
    finally:
        os.close(fd)
    return rc if rc >= 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
