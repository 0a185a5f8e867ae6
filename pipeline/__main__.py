"""`python -m pipeline …`: the operator CLI, which lives on the laptop side (local/cli.py)."""

import sys

from local.cli import main

sys.exit(main())
