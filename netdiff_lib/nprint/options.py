"""nPrint 1.2.1's command line, parsed as its argp/getopt_long parses it.

The option table is nPrint's (``src/nprint.cpp``): every short and long name, which take an argument, and
argp's own ``-?``/``--help``, ``--usage`` and ``--version``, plus ``-I``/``--ip_file`` (see the table).
Parsing follows getopt_long: short options bundle (``-4tu``, ``-c50``), an argument is attached or the next
word (so ``-F -1`` works), long names take ``--name=value`` or ``--name value`` and may be shortened to any
unique prefix, words that are not options are an error.  Errors print getopt's message and exit 64 (argp's
``EX_USAGE``), as nPrint does; numbers are read with C's ``atoi`` (``-c 12x`` is 12, ``-c x`` is 0) and
``-F`` wraps to int8 as nPrint's ``int8_t`` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PROG = "nprint"
VERSION = "nprint 1.2.1"
EX_USAGE = 64


@dataclass(frozen=True)
class Option:
    short: str  # "" when there is none
    long: str
    arg: str | None = None  # argp's metavar when the option takes an argument


#: nPrint 1.2.1's options (``struct argp_option options[]``) plus argp's built-ins.
OPTIONS: tuple[Option, ...] = (
    Option("d", "device", "STRING"), Option("f", "filter", "STRING"), Option("c", "count", "INTEGER"),
    Option("P", "pcap_file", "FILE"), Option("N", "nPrint_file", "FILE"), Option("C", "csv_file", "FILE"),
    Option("W", "write_file", "FILE"), Option("x", "nprint_filter", "STRING"), Option("h", "nprint_filter_help"),
    Option("O", "write_index", "INTEGER"), Option("S", "stats"), Option("F", "fill_int", "INT8_T"),
    Option("r", "radiotap"), Option("w", "wlan"), Option("e", "eth"), Option("4", "ipv4"), Option("6", "ipv6"),
    Option("t", "tcp"), Option("u", "udp"), Option("i", "icmp"), Option("p", "payload", "PAYLOAD_SIZE"),
    Option("A", "absolute_timestamps"), Option("R", "relative_timestamps"), Option("V", "verbose"),
    Option("?", "help"), Option("", "usage"), Option("", "version"), Option("", "program-name", "NAME"),
    # nPrint's IP-file filter: in its parser code and passed by nprintML, though 1.2.1's option table and help
    # leave it out (there, -I is rejected); accepted here so that nprintML's --ip_file works.
    Option("I", "ip_file", "FILE"),
)
_BY_SHORT = {o.short: o for o in OPTIONS if o.short}
_BY_LONG = {o.long: o for o in OPTIONS}


class UsageError(Exception):
    """A command line getopt rejects; the message is getopt's (without the program name)."""


@dataclass
class Parsed:
    """Options in command-line order, as ``(short or long name, argument or None)``."""

    items: list[tuple[str, str | None]] = field(default_factory=list)
    operands: list[str] = field(default_factory=list)
    error: str | None = None  # getopt's complaint, met after ``items`` (those before it still act, e.g. -h)


def atoi(text: str) -> int:
    """C's ``atoi``: optional blanks and sign, then the leading digits (0 when there are none)."""
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def int8(value: int) -> int:
    """``value`` stored into an ``int8_t`` (two's complement wrap)."""
    return (value + 128) % 256 - 128


def _long(word: str, rest: list[str]) -> tuple[Option, str | None]:
    name, eq, value = word[2:].partition("=")
    if name in _BY_LONG:
        opt = _BY_LONG[name]
    else:
        hits = [o for o in OPTIONS if o.long.startswith(name)]
        if not hits:
            raise UsageError(f"unrecognized option '{word}'")
        if len(hits) > 1:
            names = " ".join(f"'--{o.long}'" for o in hits)
            raise UsageError(f"option '{word}' is ambiguous; possibilities: {names}")
        opt = hits[0]
    if opt.arg is None:
        if eq:
            raise UsageError(f"option '--{opt.long}' doesn't allow an argument")
        return opt, None
    if eq:
        return opt, value
    if not rest:
        raise UsageError(f"option '--{opt.long}' requires an argument")
    return opt, rest.pop(0)


def _shorts(word: str, rest: list[str]) -> list[tuple[Option, str | None]]:
    out, i = [], 1
    while i < len(word):
        ch = word[i]
        opt = _BY_SHORT.get(ch)
        if opt is None:
            raise UsageError(f"invalid option -- '{ch}'")
        if opt.arg is None:
            out.append((opt, None))
            i += 1
            continue
        if i + 1 < len(word):
            out.append((opt, word[i + 1 :]))
        elif rest:
            out.append((opt, rest.pop(0)))
        else:
            raise UsageError(f"option requires an argument -- '{ch}'")
        break
    return out


def parse(argv: list[str]) -> Parsed:
    """Parse nPrint's argv (without the program name), stopping at the first error getopt reports."""
    rest, parsed = list(argv), Parsed()
    while rest:
        word = rest.pop(0)
        if word == "--":
            parsed.operands += rest
            break
        try:
            if word.startswith("--"):
                found = [_long(word, rest)]
            elif word.startswith("-") and word != "-":
                found = _shorts(word, rest)
            else:
                parsed.operands.append(word)
                continue
        except UsageError as exc:
            parsed.error = str(exc)
            break
        parsed.items += [(o.short or o.long, v) for o, v in found]
    if parsed.error is None and parsed.operands:
        parsed.error = "Too many arguments"
    return parsed


def usage_error(message: str) -> str:
    return f"{PROG}: {message}\nTry `{PROG} --help' or `{PROG} --usage' for more information.\n"
