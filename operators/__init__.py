"""FiftyOne operators (the adapter between FiftyOne datasets and the core)."""

from __future__ import annotations

#: Operator classes registered with FiftyOne; each must also be listed in fiftyone.yml.
OPERATOR_CLASSES: list[type] = []


def register_operators(plugin) -> None:
    for operator_class in OPERATOR_CLASSES:
        plugin.register(operator_class)
