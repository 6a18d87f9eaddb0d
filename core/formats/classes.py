"""One class numbering shared by every format a run writes."""

from __future__ import annotations

import threading
from collections.abc import Iterable


class ClassList:
    """Class names in a fixed order: the prompt's phrases first, then any other name in the order first seen.

    COCO, YouTube-VIS and MOTS number a class ``index + 1`` (COCO category ids
    start at 1, as supervision's ``classes_to_coco_categories`` does), YOLO
    ``index``; one shared list keeps the formats of a run consistent.

    >>> classes = ClassList(["car", "person"])
    >>> classes.index("person"), classes.index("dog"), classes.names
    (1, 2, ['car', 'person', 'dog'])
    """

    def __init__(self, names: Iterable[str] = ()):
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._lock = threading.Lock()  # writers may be fed from several threads
        for name in names:
            self.index(name)

    def index(self, name: str) -> int:
        """The 0-based index of ``name``, appended if new."""
        with self._lock:
            if name not in self._index:
                self._index[name] = len(self._names)
                self._names.append(name)
            return self._index[name]

    @property
    def names(self) -> list[str]:
        with self._lock:
            return list(self._names)

    def coco_categories(self) -> list[dict]:
        return [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(self.names)]
