"""How the `python -m pipeline` commands speak to a person, shared by local.cli, local.stack
and local.operator_client (a module of its own so that none of those three imports another for
it): a command's answer goes to stdout, what it says along the way to stderr.
"""

from __future__ import annotations

import sys


def err(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)
