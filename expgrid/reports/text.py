"""Numbers and tables as text: one formatting for Markdown, plain text and the run's output."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from expgrid.study import is_number


def short(value: Any) -> str:
    """A value the way people read it in a table: 4 significant digits, lists as JSON, none blank."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def signed(value: Any) -> str:
    """A difference: with its sign, blank when there is none."""
    if not is_number(value) or math.isnan(value):
        return ""
    return f"{value:+.4g}"


def assignments(values: Mapping[str, Any] | None) -> str:
    """``optimizer.lr=0.001, batch_size=32``."""
    return ", ".join(f"{k}={short(v)}" for k, v in (values or {}).items())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)]) + "\n"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = [indent + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in (header, *rows)]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV with values as stored: full-precision numbers, lists as JSON, missing ones empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v for v in row])
    return out.getvalue()
