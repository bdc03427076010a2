"""The options every command spells the same way: ``-o/--out`` (where the results go), ``-q/--quiet`` (no
progress output) and ``--sample-steps`` (sampler steps).  Older spellings stay accepted as hidden aliases
(``help=argparse.SUPPRESS``): a script written for an earlier netdiff keeps working, ``--help`` shows one name.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

_ALIAS_KEYS = ("action", "type", "nargs", "metavar", "choices", "default", "const")


def add_option(p: argparse.ArgumentParser, names: Sequence[str], aliases: Sequence[str] = (), *,
               required: bool = False, **kwargs: Any) -> argparse.Action:
    """``p.add_argument(*names, **kwargs)`` plus each of ``aliases`` as a hidden option with the same destination.
    The names and aliases are mutually exclusive (giving both is an error), and ``required`` asks for one of them."""
    group = p.add_mutually_exclusive_group(required=required)
    action = group.add_argument(*names, **kwargs)
    hidden = {k: v for k, v in kwargs.items() if k in _ALIAS_KEYS}
    for alias in aliases:
        group.add_argument(alias, dest=action.dest, help=argparse.SUPPRESS, **hidden)
    return action


def add_out(p: argparse.ArgumentParser, help: str, *, aliases: Sequence[str] = (), required: bool = True,
            **kwargs: Any) -> argparse.Action:
    """``-o/--out``: where a command writes its results."""
    return add_option(p, ("-o", "--out"), aliases, required=required, help=help, **kwargs)


def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bars", *,
              aliases: Sequence[str] = ()) -> argparse.Action:
    """``-q/--quiet``: no progress output (results and errors are still printed)."""
    return add_option(p, ("-q", "--quiet"), aliases, action="store_true", help=help)


def add_sample_steps(p: argparse.ArgumentParser, help: str, *, aliases: Sequence[str] = (),
                     **kwargs: Any) -> argparse.Action:
    """``--sample-steps``: the sampler's steps (``--steps`` is training steps, in ``train`` and ``run``)."""
    return add_option(p, ("--sample-steps",), aliases, type=int, metavar="N", help=help, **kwargs)
