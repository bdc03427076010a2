"""Report tables and how they are rendered, as Markdown and as HTML, for a reader.

A :class:`Table` is data: a title, headers, rows of raw values (floats unrounded) and a note.  Rendering makes it
readable: numbers get three significant digits (:func:`fmt`); a table wider than :data:`MAX_COLUMNS` is
transposed when it has few rows (the headline: one column per row, one line per metric) and split into column
groups otherwise, each repeating the table's ``keys`` leading columns; in HTML a table longer than
:data:`OPEN_ROWS` rows is a collapsed ``<details>`` section.  :func:`config_items` turns a config dict into
``key: value`` pairs for a short list instead of raw JSON.
"""

from __future__ import annotations

import html as html_lib
import json
import math
from dataclasses import dataclass, replace

#: most columns a rendered table has (wider tables are transposed or split)
MAX_COLUMNS = 8
#: tables with at most this many rows are transposed rather than split when they are too wide
TRANSPOSE_ROWS = 4
#: HTML tables with more rows than this start collapsed
OPEN_ROWS = 12


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list]
    note: str = ""
    keys: int = 1  # leading columns that name a row (repeated in every part of a split table)


def fmt(value: object) -> str:
    """A cell: three significant digits for floats (no exponent from 0.001 to 999,999), thousands separated."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 1000 and value == int(value)):
        return f"{int(value):,}"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.2e}"


def transpose(t: Table) -> Table:
    """One column per row of ``t`` (named by its key columns), one line per other column."""
    names = [" / ".join(str(v) for v in row[:t.keys]) or str(i + 1) for i, row in enumerate(t.rows)]
    corner = " / ".join(t.headers[:t.keys]) if t.keys else ""
    body = [[h, *(row[j] for row in t.rows)] for j, h in enumerate(t.headers) if j >= t.keys]
    return replace(t, headers=[corner, *names], rows=body, keys=1)


def layout(t: Table) -> list[Table]:
    """``t`` as tables of at most :data:`MAX_COLUMNS` columns (module docstring); the first carries the title."""
    if len(t.headers) <= MAX_COLUMNS:
        return [t]
    if len(t.rows) <= TRANSPOSE_ROWS:
        return [transpose(t)]
    keys, values = t.headers[:t.keys], list(range(t.keys, len(t.headers)))
    parts = math.ceil(len(values) / max(MAX_COLUMNS - t.keys, 1))
    size = math.ceil(len(values) / parts)
    out = []
    for start in range(0, len(values), size):
        cols = list(range(t.keys)) + values[start:start + size]
        out.append(replace(t, headers=[*keys, *(t.headers[c] for c in values[start:start + size])],
                           rows=[[row[c] for c in cols] for row in t.rows]))
    return out


def markdown_table(t: Table) -> str:
    """A ``##`` section with the table (split or transposed when wide) and its note."""
    lines = [f"## {t.title}", ""]
    for part in layout(t):
        lines += ["| " + " | ".join(part.headers) + " |", "|" + "---|" * len(part.headers)]
        lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in part.rows] + [""]
    return "\n".join(lines + ([t.note, ""] if t.note else []))


def html_table(t: Table) -> str:
    """An ``<h2>`` section with the table (split or transposed when wide) and its note; a long one collapsed."""
    esc = html_lib.escape
    parts = []
    for part in layout(t):
        head = "".join(f"<th>{esc(h)}</th>" for h in part.headers)
        body = "".join("<tr>" + "".join(f"<td>{esc(fmt(v))}</td>" for v in row) + "</tr>" for row in part.rows)
        parts.append(f"<table><tr>{head}</tr>{body}</table>")
    note = f"<p class=note>{esc(t.note)}</p>" if t.note else ""
    if len(t.rows) > OPEN_ROWS and len(t.headers) > 2:
        return (f"<h2>{esc(t.title)}</h2>{note}<details><summary>{len(t.rows)} rows (click to show)</summary>"
                f"{''.join(parts)}</details>")
    return f"<h2>{esc(t.title)}</h2>{''.join(parts)}{note}"


def config_items(config: dict, prefix: str = "") -> list[tuple[str, str]]:
    """``(key, value)`` pairs of a config dict, nested keys joined with dots, values as short text."""
    out: list[tuple[str, str]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += config_items(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            out.append((name, ", ".join(map(str, value)) or "–"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((name, fmt(value)))
        else:
            out.append((name, "–" if value is None else json.dumps(value) if isinstance(value, dict) else str(value)))
    return out
