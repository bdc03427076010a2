"""The ``netdiff`` command line.

Each sub-command is a module in this package that defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; modules are discovered, so a stage adds its command without touching this file.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from netdiff_lib import __version__
from netdiff_lib.errors import NetdiffError

if TYPE_CHECKING:  # argparse and the command modules load only when needed: `netdiff nprint` skips them
    import argparse
    from types import ModuleType


def _commands() -> list[ModuleType]:
    import importlib
    import pkgutil

    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


def build_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="netdiff", description="Synthetic network traffic from diffusion models.",
        epilog="Every command but nprint (nPrint's own command line) writes its results to -o/--out, turns progress "
               "output off with -q/--quiet, and takes sampler steps as --sample-steps (--steps: training steps).")
    parser.add_argument("--version", action="version", version=f"netdiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _commands():
        p = sub.add_parser(
            mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
            add_help=getattr(mod, "ADD_HELP", True),
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["nprint"]:  # nPrint's own command line, without importing every other command
        from netdiff_lib.cli.nprint import main as nprint_main

        return nprint_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given (``netdiff train`` repeats it with --resume after Ctrl-C)
    try:
        return int(args._run(args) or 0)
    except NetdiffError as exc:
        print(f"netdiff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system refusal that no check caught: one line naming the path
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"netdiff {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
