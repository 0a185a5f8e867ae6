"""`python -m pipeline`: run the local stack, submit photos, and see what became of them.

Every command but `up`/`down`/`host` works against whatever the settings point at — the local
emulators or a deployed Azure environment (set DARKROOM_STORAGE / DARKROOM_COSMOS, or their
identity-based forms, and sign in with `az login`).
"""

# This module is only the parser and `main` (the docstring above is `--help`'s description): the
# commands live in local.stack (up, down, host: what runs the local stack) and
# local.operator_client (everything else: what talks to a stack, local or on Azure).

from __future__ import annotations

import argparse

from local.cli_output import err
from local.operator_client import (
    cmd_failed,
    cmd_keys_add,
    cmd_poison,
    cmd_reprocess,
    cmd_show,
    cmd_status,
    cmd_submit,
    cmd_trace,
)
from local.stack import cmd_down, cmd_host, cmd_up
from pipeline.settings import SettingsError, get_settings, load_local_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start emulators and the functions host (Ctrl-C stops)")
    up.add_argument("--detach", action="store_true", help="run in the background; stop: down")
    up.add_argument(
        "--salvage-journal",
        action="store_true",
        help="the Cosmos journal is damaged: keep its readable entries, lose the rest",
    )
    up.set_defaults(run=cmd_up)
    sub.add_parser("down", help="stop what `up --detach` started").set_defaults(run=cmd_down)
    sub.add_parser("host", help="run only the functions host (emulators already up)").set_defaults(
        run=cmd_host
    )
    submit = sub.add_parser("submit", help="upload photos (files or folders) to the pipeline")
    submit.add_argument("paths", nargs="+")
    submit.add_argument("--wait", action="store_true", help="wait for every final status")
    submit.add_argument(
        "--json", action="store_true", help="print each final document as one JSON line on stdout"
    )
    submit.add_argument("--timeout", type=float, default=900, help="seconds to wait (900)")
    submit.add_argument(
        "--download", metavar="DIR", help="with --wait: copy each published derivative into DIR"
    )
    submit.set_defaults(run=cmd_submit)
    show = sub.add_parser("show", help="print one image's document (by id or upload name)")
    show.add_argument("image")
    show.add_argument("--download", metavar="DIR", help="also save the image's blobs in DIR/<id>/")
    show.set_defaults(run=cmd_show)
    traced = sub.add_parser(
        "trace", help="an image's timeline: queue wait vs work per step (local spans)"
    )
    traced.add_argument("image", help="image id or upload name")
    traced.add_argument("--json", action="store_true")
    traced.set_defaults(run=cmd_trace)
    status = sub.add_parser("status", help="queue depths, poison counts, images by status")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_status)
    failed = sub.add_parser("failed", help="failed and rejected images with their reasons")
    failed.add_argument("--status", choices=("failed", "rejected", "all"), default="all")
    failed.add_argument("--json", action="store_true")
    failed.set_defaults(run=cmd_failed)
    poison = sub.add_parser("poison", help="inspect (list) or replay the poison queues")
    poison.add_argument("action", choices=("list", "replay"))
    poison.add_argument("--step", help="replay: only this step's poison queues")
    poison.add_argument("--image", help="replay: only this image id")
    poison.add_argument("--limit", type=int, default=1000)
    poison.add_argument("--json", action="store_true")
    poison.set_defaults(run=cmd_poison)
    again = sub.add_parser("reprocess", help="run steps again without losing other results")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--missing", metavar="STEP", help="images without a done STEP")
    which.add_argument("--all", action="store_true", help="every image (not rejected ones)")
    which.add_argument(
        "--model-changed",
        action="store_true",
        help="images analysed by another model version than the current one",
    )
    again.add_argument(
        "--from",
        dest="start",
        metavar="STEP",
        help="start here instead (default: the step in question)",
    )
    again.add_argument(
        "--lane",
        choices=("backfill", "live"),
        default="backfill",
        help="backfill (default) leaves fresh uploads their own queues",
    )
    again.add_argument("--limit", type=int)
    again.add_argument("--dry-run", action="store_true")
    again.add_argument("--json", action="store_true")
    again.set_defaults(run=cmd_reprocess)
    keys = sub.add_parser("keys", help="API keys for the HTTP API")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    add = keys_sub.add_parser("add", help="make a new key: prints it once, and the setting entry")
    add.add_argument("name", help="who the key is for (letters, digits, _ or -; up to 40)")
    add.add_argument("--admin", action="store_true", help="an admin key (operations routes)")
    add.add_argument(
        "--save",
        action="store_true",
        help="also add the entry to the local settings file (a running local host takes it)",
    )
    add.add_argument("--json", action="store_true")
    add.set_defaults(run=cmd_keys_add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load_local_settings()
    try:
        get_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            err(f"setting: {problem}")
        err("fix these in local.settings.json (or the environment) and run the command again")
        return 2
    return args.run(args)
