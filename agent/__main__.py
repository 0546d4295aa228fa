"""`python -m agent` is the same as `sync-agent`."""

import sys

from agent.cli import main

sys.exit(main())
