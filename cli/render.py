"""Tables as every tabular command prints them: streamed, fitted to the terminal, or as CSV/TSV.

A table is a list of `Column`s and an iterable of rows of plain values (text, integers, epoch
microseconds for times, None). How a value is shown depends on the format:

- `table` (the default): rows are written as they come, in chunks whose columns line up. On a
  terminal the table fits its width: first the free text is shortened, then the columns that
  matter least are dropped; ids, cids and positions (`key` columns) are never cut. Output longer
  than the screen goes through `$PAGER` (`less -FRX` unless set), as `git log` does. Piped,
  nothing is fitted and no line carries trailing padding.
- `csv` / `tsv`: a header, then every value whole; times as RFC 3339.

Control characters in data are shown escaped in every format but CSV/TSV, which quote them.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import click
from rich.cells import cell_len, set_cell_size

from chatledger.cli.output import escape_controls, format_time, iso_time, time_label, writable

Format = Literal["table", "csv", "tsv", "json"]
Kind = Literal["key", "text", "time", "count"]

# Rows are laid out this many at a time: the first screen appears at once, whatever the total.
CHUNK_ROWS = 200
_GAP = "  "
_ELLIPSIS = "…"
# Free text is shortened to no less than this before a column is dropped instead.
MIN_TEXT = 12
# What the pager is told when the user has not set LESS: quit when one screen holds it all,
# pass colours through, leave the screen as it is (git's choice).
_LESS_DEFAULT = "FRX"


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its header, what it holds, and when it goes on a narrow terminal.

    `kind="key"` (ids, cids, positions) is never cut; `"text"` may be shortened with "…";
    `"time"` is epoch microseconds, labelled with its time zone in the header. `drop` orders
    the columns a narrow terminal leaves out: the highest first; 0 is never dropped."""

    name: str
    kind: Kind = "text"
    drop: int = 0

    def header(self) -> str:
        return f"{self.name} ({time_label()})" if self.kind == "time" else self.name


def format_options(*, json_help: str = "JSON lines.") -> Callable[[Any], Any]:
    """`--json`, `--csv` and `--tsv`, given to the command as one `fmt` argument."""

    def decorate(command: Any) -> Any:
        for flag, value, text in reversed((
            ("--json", "json", json_help),
            ("--csv", "csv", "Comma-separated values with a header row; times as RFC 3339."),
            ("--tsv", "tsv", "Tab-separated values with a header row; times as RFC 3339."),
        )):
            command = click.option(flag, "fmt", flag_value=value, help=text)(command)
        return command

    return decorate


def output_format(fmt: str | None) -> Format:
    return (fmt or "table")  # type: ignore[return-value]


def terminal_width() -> int | None:
    """The width to fit tables to: the terminal's, or None when standard output is not one."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def use_pager() -> bool:
    """Whether long output goes through a pager: on a terminal, unless `--no-pager` or
    `PAGER`/`CHATLEDGER_PAGER` set to `cat` or nothing."""
    from chatledger.cli.output import settings

    if settings.no_pager or not sys.stdout.isatty() or not sys.stdin.isatty():
        return False
    pager = os.environ.get("CHATLEDGER_PAGER", os.environ.get("PAGER"))
    return pager is None or pager.strip() not in ("", "cat")


def emit_table(columns: Sequence[Column], rows: Iterable[Sequence[Any]], fmt: Format,
               *, empty: str | None = None) -> int:
    """Print `rows` under `columns` in `fmt` ("table", "csv" or "tsv"); returns the number of
    rows. With no rows, a table prints `empty` instead (when given)."""
    if fmt in ("csv", "tsv"):
        return _write_delimited(columns, rows, fmt)
    counted = _Counter(rows)
    lines = table_lines(columns, counted, terminal_width())
    first = next(lines, None)
    if first is None:
        if empty:
            click.echo(empty)
        return 0
    if use_pager():
        os.environ.setdefault("LESS", _LESS_DEFAULT)
        click.echo_via_pager(_with_newlines(first, lines))
    else:
        click.echo(first)
        for line in lines:
            click.echo(line)
    return counted.count


class _Counter:
    def __init__(self, rows: Iterable[Sequence[Any]]) -> None:
        self.rows = iter(rows)
        self.count = 0

    def __iter__(self) -> Iterator[Sequence[Any]]:
        for row in self.rows:
            self.count += 1
            yield row


def _with_newlines(first: str, lines: Iterator[str]) -> Iterator[str]:
    yield first + "\n"
    for line in lines:
        yield line + "\n"


def _write_delimited(columns: Sequence[Column], rows: Iterable[Sequence[Any]], fmt: str) -> int:
    dialect = "excel-tab" if fmt == "tsv" else "excel"
    writer = csv.writer(sys.stdout, dialect=dialect, lineterminator="\n")
    # With "\n" ending the lines, the csv module does not quote a value holding a lone "\r",
    # which every CSV reader takes for the end of the row: such a row is written all quoted.
    quoted = csv.writer(sys.stdout, dialect=dialect, lineterminator="\n",
                        quoting=csv.QUOTE_ALL)
    writer.writerow([column.name for column in columns])
    count = 0
    for row in rows:
        values = [_delimited_value(column, value) for column, value in zip(columns, row)]
        if any(isinstance(value, str) and "\r" in value for value in values):
            quoted.writerow(values)
        else:
            writer.writerow(values)
        count += 1
    sys.stdout.flush()
    return count


def _delimited_value(column: Column, value: Any) -> Any:
    if value is None:
        return ""
    if column.kind == "time" and isinstance(value, int):
        return iso_time(value)
    return writable(value) if isinstance(value, str) else value


def _cell(column: Column, value: Any) -> str:
    if value is None:
        return "-" if column.kind in ("time", "key") else ""
    if column.kind == "time" and isinstance(value, int) and not isinstance(value, bool):
        return format_time(value)
    if column.kind == "count" and isinstance(value, int):
        return f"{value:,}"
    return escape_controls(str(value))


def table_lines(columns: Sequence[Column], rows: Iterable[Sequence[Any]],
                width: int | None) -> Iterator[str]:
    """The lines of a table: a header, then the rows, laid out a chunk at a time (a column
    only ever widens from one chunk to the next). `width=None` fits nothing."""
    widths: list[int] | None = None
    shown_columns: list[int] = []
    chunk: list[list[str]] = []
    iterator = iter(rows)
    while True:
        chunk = [[_cell(column, value) for column, value in zip(columns, row)]
                 for row in _take(iterator, CHUNK_ROWS)]
        if not chunk:
            return
        natural = [max([cell_len(column.header())] + [cell_len(cells[index]) for cells in chunk])
                   for index, column in enumerate(columns)]
        if widths is None:
            shown_columns, widths = fit(columns, natural, width)
            yield _line([columns[i].header() for i in shown_columns],
                        [widths[i] for i in shown_columns])
        else:
            widths = [max(old, new) if columns[i].kind == "key" else old
                      for i, (old, new) in enumerate(zip(widths, natural))]
        for cells in chunk:
            yield _line([cells[i] for i in shown_columns], [widths[i] for i in shown_columns],
                        [columns[i].kind == "key" for i in shown_columns])


def _take(iterator: Iterator[Sequence[Any]], count: int) -> list[Sequence[Any]]:
    taken = []
    for row in iterator:
        taken.append(row)
        if len(taken) >= count:
            break
    return taken


def fit(columns: Sequence[Column], natural: list[int],
        width: int | None) -> tuple[list[int], list[int]]:
    """Which columns to show and how wide, within `width`: free text is shortened first (to
    `MIN_TEXT`), then columns are dropped, highest `drop` first; key columns keep their width
    even when the line must then overflow."""
    widths = list(natural)
    shown_columns = list(range(len(columns)))
    if width is None:
        return shown_columns, widths

    def total() -> int:
        return sum(widths[i] for i in shown_columns) + len(_GAP) * (len(shown_columns) - 1)

    texts = sorted((i for i in shown_columns if columns[i].kind == "text"),
                   key=lambda column_index: -widths[column_index])
    for index in texts:
        excess = total() - width
        if excess <= 0:
            break
        widths[index] = max(min(MIN_TEXT, natural[index]), widths[index] - excess)
    for index in sorted((i for i in shown_columns if columns[i].drop),
                        key=lambda column_index: -columns[column_index].drop):
        if total() <= width:
            break
        shown_columns.remove(index)
    # Still too wide: long free text gives up what it must (down to its header); short values
    # (a status, a count) stay whole: cut, they would say nothing.
    for index in reversed(shown_columns):
        excess = total() - width
        if excess <= 0:
            break
        if columns[index].kind == "text" and natural[index] > MIN_TEXT:
            widths[index] = max(cell_len(columns[index].header()), MIN_TEXT // 2,
                                widths[index] - excess)
    return shown_columns, widths


def _line(cells: list[str], widths: list[int], keys: list[bool] | None = None) -> str:
    """Cells laid out by the columns they take on a terminal, not by their length: a CJK
    character or an emoji takes two, a combining accent none."""
    parts = []
    last = len(cells) - 1
    for index, (cell, width) in enumerate(zip(cells, widths)):
        size = cell_len(cell)
        if size > width and not (keys and keys[index]):
            cell = set_cell_size(cell, max(0, width - 1)).rstrip(" ") + _ELLIPSIS
            size = cell_len(cell)
        parts.append(cell if index == last else cell + " " * (width - size))
    return _GAP.join(parts).rstrip()
