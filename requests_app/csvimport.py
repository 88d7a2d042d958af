"""Bulk submission: one CSV, one request per row, all or nothing.

The web upload and ``manage.py requests_submit`` both call ``parse_csv``; each row is checked
by the same form as the web page, so a file is accepted exactly when every row would be.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from requests_app.forms import RequestForm, TenantLookups, form_class
from requests_app.types import (
    OPTIONAL_COLUMNS,
    REQUEST_TYPES,
    RequestType,
    available_types,
    get_type,
    sample_row,
)


@dataclass
class ParsedRow:
    line: int
    rtype: RequestType
    data: dict
    extra: dict = field(default_factory=dict)  # the caller's own columns (plans: ``schedule``)


@dataclass
class ParseResult:
    rows: list[ParsedRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.rows)


def _known_columns() -> set[str]:
    return {c for t in REQUEST_TYPES.values() for c in t.columns} | set(OPTIONAL_COLUMNS)


def _decode(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw.lstrip("\ufeff")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"Line {line}: the file is not UTF-8 text (byte {exc.start}). Save it as 'CSV UTF-8'.") from exc


class MalformedCsv(ValueError):
    """The file cannot be read as CSV; the message names the line and column."""


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, values) of each record, the header first, read with csv's strict rules: a
    quote left open, or text after a closing quote, is an error naming its line and column, not a
    value that swallows the rest of the file."""
    consumed = [0]  # characters of ``text`` handed to the reader so far

    def lines() -> Iterator[str]:
        for physical in io.StringIO(text, newline=""):
            consumed[0] += len(physical)
            yield physical

    reader = csv.reader(lines(), strict=True)
    header: list[str] = []
    line, offset = 1, 0  # where the next record starts
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise MalformedCsv(_describe(exc, text[offset:], line, header)) from None
        header = header or [v.strip() for v in values]
        yield line, values
        line, offset = reader.line_num + 1, consumed[0]


_PLAIN_END = re.compile(r"[,\r\n]")


def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _locate(rest: str) -> tuple[str, int, int] | None:
    """Where csv's strict reader gives up in ``rest`` (the file from the start of a record):
    (``long`` | ``open`` | ``after``, line offset, column index), or None if the record is fine.

    ``long``: a value over csv's field size limit; ``open``: a quote never closed; ``after``:
    text after a closing quote.
    """
    limit = csv.field_size_limit()
    pos = column = line = 0
    while pos < len(rest):
        if rest[pos] == '"':
            start_line, length, pos = line, 0, pos + 1
            while True:
                quote = rest.find('"', pos)
                if quote < 0:
                    return "open", start_line, column
                length += quote - pos
                line += _line_breaks(rest[pos:quote])
                if rest.startswith('""', quote):
                    length, pos = length + 1, quote + 2
                    continue
                pos = quote + 1
                break
            if length > limit:
                return "long", start_line, column
            if pos < len(rest) and rest[pos] not in ",\r\n":
                return "after", line, column
        else:
            end = _PLAIN_END.search(rest, pos)
            end_pos = end.start() if end else len(rest)
            if end_pos - pos > limit:
                return "long", line, column
            pos = end_pos
        if pos >= len(rest) or rest[pos] in "\r\n":
            return None
        column, pos = column + 1, pos + 1
    return None


def _describe(exc: csv.Error, rest: str, line: int, header: list[str]) -> str:
    """The error for a record csv refused, starting at ``line`` with the text ``rest``."""
    found = _locate(rest)
    if found is None:
        return f"Line {line}: the file is not valid CSV ({exc})."
    kind, offset, column = found
    name = header[column] if column < len(header) else f"{column + 1}"
    where = f"Line {line + offset}, column {name}"
    if kind == "long":
        return f"{where}: the value is longer than {csv.field_size_limit():,} characters."
    if kind == "open":
        return f"{where}: a quoted value is never closed (a '\"' without its closing '\"'), so nothing after it can be read."
    return f"{where}: text follows a closing quote; inside a quoted value write '\"' as '\"\"'."


def _header_errors(header: list[str], extra_columns=()) -> list[str]:
    errors = []
    unknown = sorted(set(header) - _known_columns() - set(extra_columns))
    if unknown:
        errors.append(f"Line 1: unknown column(s) {', '.join(name or '(empty)' for name in unknown)}.")
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        errors.append(f"Line 1: column(s) {', '.join(twice)} appear more than once.")
    if "request_type" not in header:
        errors.append("Line 1: the column request_type is required.")
    return errors


@sensitive_variables()  # the rows hold mailbox passwords
def parse_csv(raw: bytes | str, *, tenant, extra_columns: tuple[str, ...] = ()) -> ParseResult:
    """Validate every row; ``errors`` holds one line per problem, naming the CSV line and column.

    The file is read in two steps: first its structure and size (no row is validated in a file
    that is malformed or has more than ``LEGACYFLO_CSV_MAX_ROWS`` requests), then every row,
    against one snapshot of the tenant's buckets and connections. ``extra_columns`` are the
    caller's own (required in the header), handed back per row in ``ParsedRow.extra``.
    """
    result = ParseResult()
    max_rows = settings.LEGACYFLO_CSV_MAX_ROWS
    try:
        text = _decode(raw)
        records = _records(text)
        header = [h.strip() for h in next(records, (1, []))[1]]
        if not any(header):
            result.errors.append("The file is empty: the first line must name the columns.")
            return result
        result.errors.extend(_header_errors(header, extra_columns))
        result.errors.extend(f"Line 1: the column {name} is required." for name in extra_columns if name not in header)
        if result.errors:
            return result
        rows: list[tuple[int, list[str]]] = []
        for line, values in records:
            if not any(v.strip() for v in values):
                continue
            if len(rows) == max_rows:
                result.errors.append(f"The file has more than {max_rows:,} requests (the most one file may "
                                     "hold); split it.")
                return result
            rows.append((line, values))
    except ValueError as exc:  # not UTF-8, or not CSV (MalformedCsv)
        result.errors.append(str(exc))
        return result

    lookups = TenantLookups.load(tenant)
    unbound: dict[str, RequestForm] = {}  # one per type; each row gets a bound copy
    destinations: dict[tuple, int] = {}
    for line, values in rows:
        if len(values) > len(header):
            result.errors.append(f"Line {line}: more values than columns.")
            continue
        row = dict.fromkeys(header, "")
        row.update((name, value.strip()) for name, value in zip(header, values, strict=False))
        extra_values = {name: row.pop(name, "") for name in extra_columns}
        rtype = get_type(row.get("request_type", ""))
        if rtype is None:
            codes = ", ".join(t.code for t in available_types())
            result.errors.append(f"Line {line}: request_type {row.get('request_type')!r} is not one of {codes}.")
            continue
        extra = sorted(k for k, v in row.items() if v and k not in rtype.columns and k not in OPTIONAL_COLUMNS)
        if extra:
            result.errors.append(f"Line {line}: {', '.join(extra)} do(es) not apply to {rtype.code}.")
            continue
        if rtype.code not in unbound:
            kwargs = {"check_archive": False} if rtype.is_restore else {}
            unbound[rtype.code] = form_class(rtype)(rtype=rtype, tenant=tenant, lookups=lookups, **kwargs)
        form = unbound[rtype.code].bound_copy(row)
        if not form.is_valid():
            for name, errors in form.errors.items():
                where = "" if name == "__all__" else f"{name}: "
                for message in errors:
                    result.errors.append(f"Line {line}: {where}{message}")
            continue
        data = form.cleaned_data
        key = (data["bucket"].pk, data["s3_prefix"], data["file_name"].lower())
        if key in destinations:
            result.errors.append(f"Line {line}: same bucket, prefix and file name as line {destinations[key]}.")
            continue
        destinations[key] = line
        result.rows.append(ParsedRow(line=line, rtype=rtype, data=data, extra=extra_values))
    if not result.rows and not result.errors:
        result.errors.append("The file has a header but no requests.")
    return result


def sample_csv(rtype: RequestType, rows: int = 2, *, bucket: str = "") -> str:
    """A sample file of ``rtype``; ``bucket`` (the tenant's own bucket) replaces the placeholder."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=rtype.columns, lineterminator="\n")
    writer.writeheader()
    for n in range(1, rows + 1):
        row = sample_row(rtype, n)
        if bucket and "bucket" in row:
            row["bucket"] = bucket
        writer.writerow(row)
    return out.getvalue()


_ERROR_LINE = re.compile(r"^Line (\d+)(?:, column ([^:]+))?: (.*)$", re.S)


def errors_csv(errors: list[str]) -> str:
    """The upload's errors as CSV (line, column, error) for the administrator to work through."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["line", "column", "error"])
    for error in errors:
        match = _ERROR_LINE.match(error)
        writer.writerow(match.groups("") if match else ("", "", error))
    return out.getvalue()
