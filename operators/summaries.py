"""A run's result: counts and failures for Python, and the markdown the App's result dialog shows."""

from __future__ import annotations

from typing import Any

import fiftyone.operators.types as types

from .dataset_writes import error_field_name

#: How many failures a summary lists by name (all of them are in the error field).
FAILURES_LISTED = 100


def run_summary(
    processed: int, objects: int, failed: list[dict[str, str]], written_to: str, what: str = "samples", notes: str = ""
) -> dict[str, Any]:
    """A run's result: counts and failures for Python, and the same as markdown for the App's result dialog."""
    noun = what if processed != 1 else what.rstrip("s")
    lines = [f"**{processed}** {noun} labelled, **{objects}** objects written to {written_to}."]
    if notes:
        lines.append(notes)
    if failed:
        error_field = written_to.strip("`").removeprefix("frames.")
        lines.append(
            f"**{len(failed)} failed** (each failure is also in the sample field `{error_field_name(error_field)}`):"
        )
        lines.append("| File | Error |\n|---|---|")
        lines[-1] += "".join(
            f"\n| {_cell(row['filepath'])} | {_cell(row['error'])} |" for row in failed[:FAILURES_LISTED]
        )
        if len(failed) > FAILURES_LISTED:
            lines.append(f"... and {len(failed) - FAILURES_LISTED} more.")
    return {
        "processed": processed,
        "objects": objects,
        "failed_count": len(failed),
        "failed": failed[:FAILURES_LISTED],
        "summary": "\n\n".join(lines),
    }


def _cell(text: str) -> str:
    """Text that cannot break a markdown table row."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def queued_summary(operation_ids: list[str]) -> dict[str, Any]:
    """The result of a run split into background runs: what was queued and what must run them."""
    worker = (
        "Start a worker where the data is: `fiftyone delegated launch` (one per run to run them in parallel); "
        "follow them with `fiftyone delegated list`."
    )
    text = f"**Queued {len(operation_ids)} background runs.** Nothing runs until a worker picks them up. {worker}"
    text += "\n\n" + "\n".join(f"- `{operation_id}`" for operation_id in operation_ids)
    return {"queued": operation_ids, "summary": text}


def summary_outputs(title: str) -> types.Property:
    """The result dialog: one markdown block with counts, failures by file, or what to do next."""
    outputs = types.Object()
    outputs.str("summary", view=types.MarkdownView())
    return types.Property(outputs, view=types.View(label=title))
