"""The hook's entry: ``python3 -I .../hook/__main__.py STAGE`` as registered (see ``hook.entry``).

A stage goes straight to :mod:`hook.stage.run` (the hot path); anything else is an admin
command.  ``python3 -m hook ...`` runs the same command line.
"""

import sys

if len(sys.argv) == 2 and sys.argv[1] in ("prestart", "createRuntime", "poststop"):
    from hook.stage.run import main

    raise SystemExit(main(sys.argv[1]))
from hook.admin.cli import main as admin_main

raise SystemExit(admin_main())
