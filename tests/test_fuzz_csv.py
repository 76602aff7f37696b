"""Hypothesis over the CSV import parser (`server/jobs/imports.py` `LeadRows`), by
its public behaviour only: any bytes either fail the import with a clear
`ImportFailed` or yield leads and row errors whose line numbers are lines of
the file, in order; nothing else is ever raised, and memory stays bounded by
the line limit, not by the file.
"""

from __future__ import annotations

import io
import re
import tracemalloc
from pathlib import Path
from typing import BinaryIO

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from leadstream.server.jobs.imports import ImportFailed, LeadRows
from leadstream.store.records import LeadInput

BATCH = 7
CODE = re.compile(r"^[a-z][a-z0-9_]*$")
FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

COLUMNS = [
    "name",
    "Name",
    " EMAIL ",
    "emails",
    "phone",
    "Phones",
    "title",
    "company",
    "linkedin",
    "location",
    "industry",
    "tags",
    "Added",
    "",
    "x",
]
TYPICAL = [
    "Ada",
    "ada@x.example",
    "+1 415 555 0100",
    "https://linkedin.com/in/a",
    "a;b;;c",
    "=1+1",
    "'=cmd",
    "",
    " ",
    "x" * 300,
]
CELLS = st.one_of(
    st.sampled_from(TYPICAL),
    st.text(max_size=30),
    st.text(alphabet='",;\r\n\t \\\x00', max_size=10),
)
NEWLINES = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """Mostly-CSV text with quotes, separators and line breaks in odd places,
    sometimes with bytes that are not UTF-8, a BOM or a NUL spliced in."""
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(CELLS, max_size=8), max_size=12))
    newline = draw(NEWLINES)

    def cell(value: str) -> str:
        return f'"{value.replace(chr(34), chr(34) * 2)}"' if draw(st.booleans()) else value

    text = newline.join(",".join(cell(c) for c in line) for line in [header, *rows])
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b'"', b"\r", b"\xed\xa0\x80"]))
        data = data[:at] + junk + data[at:]
    return data


def file_lines(data: bytes) -> int:
    """Lines of the file as the parser counts them (`\\n`, `\\r\\n` or `\\r` ends one)."""
    text = io.TextIOWrapper(
        io.BytesIO(data), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )
    return len(text.readlines())


def read_all(raw: BinaryIO, max_line: int) -> tuple[list[LeadInput], list[dict]]:
    """Every lead and row error of the file, a batch at a time, as the import job reads it."""
    rows = LeadRows(raw, max_line=max_line)
    rows.read_header()
    items: list[LeadInput] = []
    errors: list[dict] = []
    while True:
        batch = rows.next_batch(BATCH)
        assert len(batch.items) + len(batch.errors) <= BATCH
        items += batch.items
        errors += batch.errors
        if batch.finished:
            return items, errors


@FUZZ
@given(data=st.one_of(csv_files(), st.binary(max_size=400)), max_line=st.integers(4, 400))
@example(data=b"", max_line=64)
@example(data=b'name\n"unclosed\nAda\n', max_line=64)
@example(data=b"name\n" + b"x" * 1000 + b"\nAda\n", max_line=64)
@example(data=b'name,email\n"a\n' + b"b" * 100 + b'",x\nAda\n', max_line=64)
def test_any_bytes_give_rows_with_their_lines_or_a_clear_failure(data: bytes, max_line: int):
    try:
        items, errors = read_all(io.BytesIO(data), max_line)
    except ImportFailed as exc:
        assert CODE.match(exc.code), exc.code
        assert exc.message.strip()
        return
    last = file_lines(data)
    lines = [error["line"] for error in errors]
    assert all(isinstance(line, int) and 2 <= line <= last for line in lines), (lines, last)
    assert lines == sorted(set(lines)), f"error lines out of order or repeated: {lines}"
    assert all(isinstance(error["message"], str) and error["message"] for error in errors)
    assert all(item.name.strip() for item in items)


def test_memory_is_bounded_by_the_line_limit_not_the_file(tmp_path: Path):
    """A 24 MB line, a 24 MB quoted cell over many lines, then good rows."""
    path = tmp_path / "huge.csv"
    with path.open("wb") as out:
        out.write(b"name,email\n")
        for _ in range(24):
            out.write(b"y" * (1 << 20))
        out.write(b'\nAda,ada@x.example\n"')
        for _ in range(24 * 16):
            out.write(b"z" * 65_000 + b"\n")
        out.write(b'",x\nBob,bob@x.example\n')
    max_line = 64 * 1024
    tracemalloc.start()
    try:
        with path.open("rb") as raw:
            items, errors = read_all(raw, max_line)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [item.name for item in items] == ["Ada", "Bob"]
    assert [error["line"] for error in errors] == [2, 4]
    # A few copies of one line's worth of text (4 bytes a character at worst), not 48 MB.
    assert peak < 16 * max_line + (1 << 20), f"peak {peak:,} bytes"
