"""The hook's entry: ``python3 -I .../hook/__main__.py STAGE`` as registered (see ``hook.entry``).

``python3 -m hook ...`` runs the same command line.
"""

from hook.cli import main

raise SystemExit(main())
