"""Bulk submission: one CSV, one request per row, all or nothing.

The web upload and ``manage.py requests_submit`` both call ``parse_csv``; each row is checked
by the same form as the web page, so a file is accepted exactly when every row would be.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from django.conf import settings

from requests_app.forms import RequestForm
from requests_app.types import REQUEST_TYPES, RequestType, available_types, get_type, sample_row


@dataclass
class ParsedRow:
    line: int
    rtype: RequestType
    data: dict


@dataclass
class ParseResult:
    rows: list[ParsedRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.rows)


def _known_columns() -> set[str]:
    return {c for t in REQUEST_TYPES.values() for c in t.columns}


def _decode(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw.lstrip("\ufeff")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"The file is not UTF-8 text (byte {exc.start}). Save it as 'CSV UTF-8'.") from exc


def parse_csv(raw: bytes | str, *, tenant) -> ParseResult:
    """Validate every row; ``errors`` holds one line per problem, naming the CSV line and column."""
    result = ParseResult()
    try:
        text = _decode(raw)
    except ValueError as exc:
        result.errors.append(str(exc))
        return result
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        result.errors.append("The file is empty: the first line must name the columns.")
        return result
    reader.fieldnames = header
    unknown = sorted(set(header) - _known_columns())
    if unknown:
        result.errors.append(f"Line 1: unknown column(s) {', '.join(unknown)}.")
    if "request_type" not in header:
        result.errors.append("Line 1: the column request_type is required.")
    if result.errors:
        return result

    destinations: dict[tuple, int] = {}
    max_rows = settings.LEGACYFLO_CSV_MAX_ROWS
    for index, raw_row in enumerate(reader):
        line = index + 2
        if None in raw_row:
            result.errors.append(f"Line {line}: more values than columns.")
            continue
        row = {k: (v or "").strip() for k, v in raw_row.items()}
        if not any(row.values()):
            continue
        if len(result.rows) + len(result.errors) >= max_rows:
            result.errors.append(f"The file has more than {max_rows} requests; split it.")
            break
        rtype = get_type(row.get("request_type", ""))
        if rtype is None:
            codes = ", ".join(t.code for t in available_types())
            result.errors.append(f"Line {line}: request_type {row.get('request_type')!r} is not one of {codes}.")
            continue
        extra = sorted(k for k, v in row.items() if v and k not in rtype.columns)
        if extra:
            result.errors.append(f"Line {line}: {', '.join(extra)} do(es) not apply to {rtype.code}.")
            continue
        form = RequestForm(row, rtype=rtype, tenant=tenant)
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
        result.rows.append(ParsedRow(line=line, rtype=rtype, data=data))
    if not result.rows and not result.errors:
        result.errors.append("The file has a header but no requests.")
    return result


def sample_csv(rtype: RequestType, rows: int = 2) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=rtype.columns, lineterminator="\n")
    writer.writeheader()
    for n in range(1, rows + 1):
        writer.writerow(sample_row(rtype, n))
    return out.getvalue()
