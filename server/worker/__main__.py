"""`python -m server.worker`: the entry point the supervisor spawns (server/api/background/supervisor.py)."""

import sys

from server.worker.loop import main

sys.exit(main())
