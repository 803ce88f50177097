"""A CSV import as a batch: the parent reads the upload and fans out one job per chunk of rows.

`ImportCsv` splits the file by byte ranges (a chunk job reads only its rows with a ranged GET, so the
messages stay small however big the file is) and dispatches the batch under an id derived from the
import's (`batch_id_for`), so a retry of the parent never starts a second batch — not even one that
crashed after sending the batch and before `self.step` recorded it: creating the same batch again finds
its record, sends the same member ids (each counted once) and its `finally` is sent once. A chunk sent
twice that way runs twice, harmlessly: its output is keyed by its first line. The step spares a later
retry the sending. Each `ImportChunk` validates its rows: good rows are imported,
bad ones written down with their line and reason. The batch allows failures, and its `finally` job,
`SummariseImport`, runs once every chunk has run, whatever happened, and writes the summary.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
import uuid

from sqsjobs import Job, batch

from . import files

#: Rows per chunk job.
CHUNK_ROWS = 50
#: Seconds of pretend work per chunk, so the progress bar has something to show (0 in the tests).
PACE_S = float(os.environ.get("CSV_IMPORT_PACE", "0.2"))
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}")


def chunk_ranges(data: bytes, rows_per_chunk: int) -> tuple[list[str], list[tuple[int, int, int]]]:
    """The header, and (start byte, end byte, first line number) of each chunk of data lines."""
    header_end = data.index(b"\n") + 1
    header = next(csv.reader([data[:header_end].decode()]))
    ranges: list[tuple[int, int, int]] = []
    start, line, rows, first = header_end, 2, 0, 2
    position = header_end
    while position < len(data):
        newline = data.find(b"\n", position)
        position = len(data) if newline == -1 else newline + 1
        rows += 1
        line += 1
        if rows == rows_per_chunk or position == len(data):
            ranges.append((start, position, first))
            start, rows, first = position, 0, line
    return header, ranges


def problem(row: dict[str, str]) -> str:
    """Why a row cannot be imported ("" when it can)."""
    if not row.get("name", "").strip():
        return "name is empty"
    if not _EMAIL.fullmatch(row.get("email", "")):
        return f"email {row.get('email', '')!r} is not an address"
    try:
        if float(row.get("balance", "")) < 0:
            return "balance is negative"
    except ValueError:
        return f"balance {row.get('balance', '')!r} is not a number"
    return ""


#: Names the batch ids of imports: one import id, one batch id, on every try.
_BATCHES = uuid.UUID("5d0c6b4e-0f57-4f4c-9a51-3c1c8f3e2a10")


def batch_id_for(import_id: str) -> str:
    """The batch id of an import: the same on every try of its parent (and after `failed retry`)."""
    return str(uuid.uuid5(_BATCHES, import_id))


class ImportCsv(Job, name="csv-import.start"):
    timeout = 120

    key: str

    def handle(self) -> None:
        import_id = self.job_id or "local"
        data = files.get_bytes(self.key)
        header, ranges = chunk_ranges(data, CHUNK_ROWS)
        chunks = [
            ImportChunk(import_id=import_id, key=self.key, header=header, start=start, end=end, first_line=first)
            for start, end, first in ranges
        ]

        def fan_out() -> str:
            pending = (
                batch(chunks)
                .finally_(SummariseImport(import_id=import_id, key=self.key))
                .allow_failures()  # a chunk that fails for good is counted; the others go on
                .name(f"import {self.key}")
            )
            # An id of our own: sending it again after a crash is the same batch, counted once.
            return pending.dispatch(batch_id=batch_id_for(import_id)).id

        batch_id = self.step("fan-out", fan_out)
        files.put_json(f"imports/{import_id}/manifest.json", {"batch_id": batch_id, "chunks": len(chunks)})


class ImportChunk(Job, name="csv-import.chunk"):
    tries = 3
    backoff = 1

    import_id: str
    key: str
    header: list[str]
    start: int
    end: int
    first_line: int

    def handle(self) -> None:
        text = files.get_bytes(self.key, self.start, self.end).decode()
        imported, rejected = [], []
        for line, row in enumerate(csv.DictReader(io.StringIO(text), fieldnames=self.header), self.first_line):
            why = problem(row)
            if why:
                rejected.append({"line": line, "reason": why, "row": row})
            else:
                imported.append({"email": row["email"].lower(), "name": row["name"].strip()})
        time.sleep(PACE_S)
        if self.first_line == 2 + 4 * CHUNK_ROWS and self.attempts == 1:
            raise ConnectionError("the customer database reset the connection")  # retried: counted once
        prefix = f"imports/{self.import_id}"
        files.put_json(f"{prefix}/rows/{self.first_line:09d}.json", imported)
        if rejected:
            files.put_json(f"{prefix}/errors/{self.first_line:09d}.json", rejected)


class SummariseImport(Job, name="csv-import.summary"):
    """The batch's `finally`: sent once, after every chunk has run."""

    import_id: str
    key: str

    def handle(self) -> None:
        prefix = f"imports/{self.import_id}"
        found = self.batch
        imported = sum(len(files.get_json(key) or []) for key in files.keys(f"{prefix}/rows/"))
        errors = [error for key in files.keys(f"{prefix}/errors/") for error in files.get_json(key) or []]
        summary = {
            "file": self.key,
            "chunks": found.total if found else None,
            "chunks_ok": found.processed if found else None,
            "chunks_failed": found.failed if found else None,
            "rows_imported": imported,
            "rows_rejected": len(errors),
            "errors": errors,
        }
        files.put_json(f"{prefix}/summary.json", summary)
