"""``python3 -I -m hook STAGE``: the form the hook is registered under."""

from hook.cli import main

raise SystemExit(main())
