"""JSON values kept on disk until a file that holds them all is assembled: memory stays flat."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class JsonSpool:
    """An append-only list of JSON values in an unnamed temporary file (gone when closed, or if the process dies).

    >>> spool = JsonSpool()
    >>> spool.append({"a": 1}), spool.append([2])
    (0, 9)
    >>> import io; out = io.StringIO(); spool.write_array(out); out.getvalue()
    '[\\n{"a": 1},\\n[2]\\n]'
    >>> spool.read_at(9)
    [2]
    """

    def __init__(self, folder: str | Path | None = None):
        # In the output folder by default: the final file lands there, so the space is needed there anyway.
        self._file: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder)
        self._end = 0
        self.count = 0

    def append(self, value: Any) -> int:
        """Store ``value``; return its offset for :meth:`read_at`."""
        line = json.dumps(value, separators=(", ", ": ")) + "\n"
        offset = self._end
        self._file.seek(offset)
        self._file.write(line)
        self._end = self._file.tell()
        self.count += 1
        return offset

    def read_at(self, offset: int) -> Any:
        self._file.seek(offset)
        return json.loads(self._file.readline())

    def __iter__(self) -> Iterator[str]:
        """Every stored value's JSON text, in the order appended."""
        self._file.flush()
        self._file.seek(0)
        for line in self._file:  # appends always go to the end: the file holds nothing else
            yield line.rstrip("\n")

    def write_array(self, out: IO[str]) -> None:
        """Write the stored values to ``out`` as one JSON array, one value per line."""
        out.write("[")
        for i, text in enumerate(self):
            out.write(("\n" if i == 0 else ",\n") + text)
        out.write("\n]" if self.count else "]")

    def close(self) -> None:
        self._file.close()
