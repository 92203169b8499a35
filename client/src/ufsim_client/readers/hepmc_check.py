"""Line-level check of HepMC2/HepMC3 ASCII files before pyhepmc parses them.

pyhepmc (HepMC3's readers) only prints a parse error and returns an empty or partial event: a
truncated file, random bytes or an empty file read as zero events, and a garbled ``P`` line is read
as whatever its numbers parse to. This check reads the file once, checks the header, every ``E``,
``V`` and ``P`` line's fields, the particle count each event declares and the end-of-listing line,
and returns each event's particle count so the reader can compare it with what pyhepmc built.

A well-formed file is checked a whole event at a time by regular expressions (a few times faster than
splitting every line in Python); anything they do not accept, valid or not, is left to the line-by-line
check, which decides and names the line. The expressions accept a subset of what the line check does.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ufsim_client.errors import InputError

__all__ = ["CheckedEvent", "check_hepmc_file"]

_FORMATS = {
    "HepMC::IO_GenEvent-START_EVENT_LISTING": ("HepMC2", "HepMC::IO_GenEvent-END_EVENT_LISTING"),
    "HepMC::Asciiv3-START_EVENT_LISTING": ("HepMC3", "HepMC::Asciiv3-END_EVENT_LISTING"),
}


@dataclass(frozen=True)
class CheckedEvent:
    """One event of a checked file: its number in the ``E`` line, line number and particle count."""

    number: int
    line: int
    particles: int


def _open(path: str | os.PathLike[str]) -> io.BufferedIOBase:
    """The file, decompressed when it starts with a gzip, bzip2 or xz signature (as pyhepmc reads it)."""
    with open(path, "rb") as probe:
        magic = probe.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(path, "rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(path, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(path, "rb")
    return open(path, "rb")


_CHUNK = 1 << 24
"""Bytes read at a time by the whole-event check (whole events are checked; a longer event is kept whole)."""
_TEXT = bytes(range(0x20, 0x7F)) + b"\n"
"""Bytes the whole-event check lets through; any other (tabs, CR, non-ASCII) goes to the line check."""
_INT = rb"[-+]?+\d++"
_FLOAT = rb"[-+]?+(?:\d++\.?+\d*+|\.\d++)(?:[eE][-+]?+\d++)?+"
"""What int() and float() read, in the usual spellings only (possessive: no backtracking)."""
_MAX_LISTED = 4
"""Most colour flows (P) or weights (V) on a line the whole-event check reads; more go to the line check."""


def _fields(pattern: bytes, count: int) -> bytes:
    return b"".join([b" " + pattern] * count)


def _listed(item: bytes, per_entry: int) -> bytes:
    """A count n (0 to _MAX_LISTED) then n * per_entry items."""
    entries = (str(n).encode() + _fields(item, per_entry * n) for n in range(_MAX_LISTED + 1))
    return b"(?:" + b"|".join(entries) + b")"


_LINE_END = rb"(?=\n|\Z)"
_P_LINE = {
    "HepMC2": re.compile(
        rb"\nP" + _fields(_INT, 2) + _fields(_FLOAT, 5) + _fields(_INT, 1) + _fields(_FLOAT, 2)
        + _fields(_INT, 1) + b" " + _listed(_INT, 2) + _LINE_END
    ),
    "HepMC3": re.compile(rb"\nP" + _fields(_INT, 3) + _fields(_FLOAT, 5) + _fields(_INT, 1) + _LINE_END),
}  # fmt: skip
_V2_LINE = re.compile(
    rb"\nV" + _fields(_INT, 2) + _fields(_FLOAT, 4) + rb" \+?+(\d++) \+?+(\d++) " + _listed(_FLOAT, 1)
    + _LINE_END
)  # fmt: skip
"""A HepMC2 vertex line; its groups are the counts of orphan and outgoing particles."""
_PROLOGUE = re.compile(
    rb"(?:[ ]*\n|HepMC::Version[^\n]*\n)*(" + b"|".join(re.escape(k.encode()) for k in _FORMATS) + rb")\n"
)


def _whole_events(path: str | os.PathLike[str], chunk_bytes: int = _CHUNK) -> list[CheckedEvent] | None:
    """The events of a well-formed file, checked ``chunk_bytes`` of whole events at a time.

    None when anything is unusual: the line-by-line check then decides.
    """
    events: list[CheckedEvent] = []
    formats: tuple[str, str] | None = None
    line, pending = 1, b""
    try:
        with _open(path) as handle:
            while True:
                chunk = handle.read(chunk_bytes)
                searched, pending = max(0, len(pending) - 2), pending + chunk
                cut = pending.rfind(b"\nE ", searched) + 1 if chunk else len(pending)
                if chunk and cut == 0:
                    continue
                segment, pending = pending[:cut], pending[cut:]
                if segment.translate(None, _TEXT):
                    return None
                if formats is None:
                    header = _PROLOGUE.match(segment)
                    if header is None:
                        return None
                    formats = _FORMATS[header.group(1).decode()]
                    line += segment.count(b"\n", 0, header.end())
                    segment = segment[header.end() :]
                body = segment if chunk else _before_end(segment, formats[1].encode())
                if body is None or formats[1].encode() in body:
                    return None
                found = _segment_events(body, formats[0], line)
                if found is None:
                    return None
                events += found
                line += body.count(b"\n")
                if not chunk:
                    return events or None
    except (OSError, EOFError, ValueError):
        return None


def _before_end(segment: bytes, end: bytes) -> bytes | None:
    """The lines before the end-of-listing line, when only blank space follows it; else None."""
    at = segment.rfind(end)
    if at < 0 or (at > 0 and segment[at - 1 : at] != b"\n") or segment[at + len(end) :].strip(b" \n"):
        return None
    return segment[:at]


def _segment_events(body: bytes, version: str, line: int) -> list[CheckedEvent] | None:
    """The events of ``body`` (whole lines starting at an ``E`` line, its first line numbered ``line``)."""
    if body[:1] == b" " or b"\n " in body or b"\n\n" in body or b"\nE\n" in body:
        return None
    if not body.startswith(b"E "):  # lines before the first event (HepMC3 run info): no P, V or E line
        first = body.find(b"\nE ") + 1 or len(body)
        preamble = b"\n" + body[:first]
        if any(kind in preamble for kind in (b"\nP", b"\nV", b"\nE")):
            return None
        line += preamble.count(b"\n") - 1
        body = body[first:]
    events: list[CheckedEvent] = []
    if not body:
        return events
    for block in (b"\n" + body[:-1]).split(b"\nE ")[1:]:
        tokens = block.partition(b"\n")[0].split()
        try:
            number = int(tokens[0])
            declared = int(tokens[2]) if version == "HepMC3" else 0
        except (ValueError, IndexError):
            return None
        particles = block.count(b"\nP ")
        if block.count(b"\nP") != particles or len(_P_LINE[version].findall(block)) != particles:
            return None
        if version == "HepMC2":
            vertices = _V2_LINE.findall(block)
            if len(tokens) < 10 or len(vertices) != block.count(b"\nV"):
                return None
            declared = sum(int(orphans) + int(outgoing) for orphans, outgoing in vertices)
        if declared != particles:
            return None
        events.append(CheckedEvent(number, line, particles))
        line += block.count(b"\n") + 1
    return events


def _ints(tokens: list[str]) -> list[int]:
    return [int(t) for t in tokens]


def _floats(tokens: list[str]) -> list[float]:
    return [float(t) for t in tokens]


def _check_p2(tokens: list[str]) -> None:
    # P barcode pid px py pz e m status theta phi end_vertex n_flow [index code]...
    _ints(tokens[1:3])
    _floats(tokens[3:8])
    _ints(tokens[8:9])
    _floats(tokens[9:11])
    n_flow = _ints(tokens[11:13])[1]
    if len(tokens) != 13 + 2 * n_flow:
        raise ValueError(f"expected {13 + 2 * n_flow} fields, found {len(tokens)}")
    _ints(tokens[13:])


def _check_v2(tokens: list[str]) -> int:
    # V barcode id x y z t n_orphan n_out n_weights [weights]; returns n_orphan + n_out
    _ints(tokens[1:3])
    _floats(tokens[3:7])
    n_orphan, n_out, n_weights = _ints(tokens[7:10])
    if len(tokens) != 10 + n_weights or min(n_orphan, n_out, n_weights) < 0:
        raise ValueError(f"expected {10 + n_weights} fields and counts >= 0, found {len(tokens)}")
    _floats(tokens[10:])
    return n_orphan + n_out


def _check_p3(tokens: list[str]) -> None:
    # P id parent_vertex pid px py pz e m status
    if len(tokens) != 10:
        raise ValueError(f"expected 10 fields, found {len(tokens)}")
    _ints(tokens[1:4])
    _floats(tokens[4:9])
    _ints(tokens[9:10])


def _lines(handle: io.BufferedIOBase) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(handle, start=1):
        try:
            yield number, raw.decode("ascii").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ValueError(f"line {number} is not ASCII text") from None


def check_hepmc_file(path: str | os.PathLike[str]) -> list[CheckedEvent]:
    """Check a HepMC2/HepMC3 ASCII file; returns its events in file order.

    Raises:
        InputError: field ``input``, naming the file, the event (its ``E`` line number) and the line,
            for a file that is not HepMC ASCII, is truncated, holds no event, or has a malformed line.
    """
    events = _whole_events(path)
    return events if events is not None else _line_check(path)


def _line_check(path: str | os.PathLike[str]) -> list[CheckedEvent]:
    """The check line by line: slower, but it decides every file and names the failing line."""
    name = os.fspath(path)
    events: list[CheckedEvent] = []
    current: dict[str, int] | None = None

    def fail(where: str, reason: str) -> InputError:
        return InputError("input", f"{name}: {where}: {reason}")

    def close_event() -> None:
        if current is None:
            return
        declared, found = current["declared"], current["particles"]
        if declared != found:
            raise fail(
                f"event {current['number']} (line {current['line']})",
                f"declares {declared} particles but holds {found} P lines (truncated or garbled)",
            )
        events.append(CheckedEvent(current["number"], current["line"], found))

    version = end = None
    finished = False
    with _open(path) as handle:
        try:
            for lineno, line in _lines(handle):
                if not line.strip() or line.startswith("HepMC::Version"):
                    continue
                if version is None:
                    if line.strip() not in _FORMATS:
                        raise fail(
                            f"line {lineno}", "not a HepMC2 or HepMC3 ASCII file (no event-listing header)"
                        )
                    version, end = _FORMATS[line.strip()]
                    continue
                if finished:
                    raise fail(f"line {lineno}", "text after the end-of-listing line")
                if line.strip() == end:
                    close_event()
                    current, finished = None, True
                    continue
                tokens = line.split()
                kind = tokens[0]
                where = f"line {lineno}" if current is None else f"event {current['number']}, line {lineno}"
                try:
                    if kind == "E":
                        close_event()
                        number = int(tokens[1])
                        declared = int(tokens[3]) if version == "HepMC3" else 0
                        current = {"number": number, "line": lineno, "declared": declared, "particles": 0}
                        if version == "HepMC2" and len(tokens) < 11:
                            raise ValueError(f"expected at least 11 fields, found {len(tokens)}")
                        continue
                    if current is None and kind in ("P", "V"):
                        raise ValueError(f"{kind!r} line before the first E line")
                    if current is None:
                        continue
                    if kind == "P":
                        (_check_p2 if version == "HepMC2" else _check_p3)(tokens)
                        current["particles"] += 1
                    elif kind == "V" and version == "HepMC2":
                        current["declared"] += _check_v2(tokens)
                except InputError:
                    raise
                except (ValueError, IndexError) as err:
                    raise fail(where, f"malformed {kind!r} line ({err}): {line[:120]!r}") from None
        except InputError:
            raise
        except (ValueError, OSError, EOFError) as err:
            raise fail("file", f"cannot be read as HepMC text ({err})") from None
    if version is None:
        raise fail("file", "is empty or not a HepMC2 or HepMC3 ASCII file (no event-listing header)")
    if not finished:
        where = f"event {current['number']} (line {current['line']})" if current else "end of file"
        raise fail(where, f"the file is truncated (no {end!r} line)")
    if not events:
        raise fail("file", "holds no event")
    return events
