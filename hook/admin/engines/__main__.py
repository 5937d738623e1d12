"""``python3 -I -m hook.admin.engines register|unregister|detect``: what install.sh and engines.sh run."""

from __future__ import annotations

import argparse
import sys

from hook.admin.engines import DEFAULT_CONFIG, ENGINES, SHIM_NAME, Layout, Settings, detect, register_all, say_line, unregister_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m hook.admin.engines", description="Register dpdk-oci-hook with container engines.")
    parser.add_argument("action", choices=("register", "unregister", "detect"))
    parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    parser.add_argument("--engines", help=f"comma-separated subset of {','.join(ENGINES)} (default: those installed)")
    parser.add_argument("--root", default="/", help="prefix for every engine config path (default /)")
    parser.add_argument("--python", default=sys.executable, help="hook interpreter (default: this one)")
    parser.add_argument("--shim", default="", help=f"runtime wrapper (default: {SHIM_NAME} beside the interpreter)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="host config the hook reads")
    parser.add_argument("--templates", default="", help="directory of the hooks.d templates")
    args = parser.parse_args(argv)
    layout = Layout(root=args.root)
    if args.action == "detect":
        for name, present in detect(layout).items():
            say_line(f"{name}: {'installed' if present else 'not installed'}")
        return 0
    engines = None
    if args.engines:
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        unknown = sorted(set(engines) - set(ENGINES))
        if unknown:
            parser.error(f"unknown engine(s): {', '.join(unknown)}")
    settings = Settings(python=args.python, shim=args.shim, config=args.config, templates=args.templates)
    run = register_all if args.action == "register" else unregister_all
    failures = run(dry_run=args.dry_run, engines=engines, layout=layout, settings=settings)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
