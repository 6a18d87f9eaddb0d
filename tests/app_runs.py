"""Run an operator the way the FiftyOne App does, and read back what the App receives.

The App posts to ``/operators/execute/generator`` for our operators (they set
``execute_as_generator``); the server calls ``execute_or_delegate_operator``
and streams each message the operator yields as a JSON line
(``fiftyone/operators/server.py``: ``ExecuteOperatorAsGenerator``,
``create_response_generator``). This helper calls the same two functions and
parses the same lines, so tests see the progress updates and the result dialog
exactly as the browser would.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import fiftyone.operators as foo
from fiftyone.operators.executor import ExecutionError, execute_or_delegate_operator
from fiftyone.operators.server import create_response_generator


@dataclass
class AppRun:
    """What the App got from one run."""

    result: dict[str, Any] | None = None  # the results of the closing show_output (the result dialog)
    error: str | None = None  # a one-line user error from the dialog, or FiftyOne's error (a traceback)
    progress: list[dict[str, Any]] = field(default_factory=list)  # every set_progress, in order
    triggered: list[str] = field(default_factory=list)  # every operator the App was asked to run
    delegated: bool = False
    rejected_by_form: bool = False  # the form marked a parameter invalid: the App keeps Execute disabled
    outputs: dict[str, Any] | None = None  # the schema the result dialog is drawn from


def run_in_app(uri: str, view, params: dict[str, Any]) -> AppRun:
    """An immediate run (the App's Execute button) on ``view``."""
    request = {"dataset_name": view._root_dataset.name, "view": view._serialize(), "params": params}
    try:
        execution = asyncio.run(execute_or_delegate_operator(uri, request))
    except ExecutionError as error:  # resolve_input marked a field invalid; FiftyOne refuses such parameters
        return AppRun(error=str(error), rejected_by_form=True)
    if execution.error:  # raised before any stream: validation, or an exception in execute()
        return AppRun(error=execution.error)
    run = AppRun()
    if not execution.is_generator:
        run.result = execution.result
        return run
    for line in create_response_generator(execution.result):
        message = json.loads(line)
        body = message["body"]
        name, trigger_params = body["operator_uri"], body.get("params") or {}
        run.triggered.append(name)
        if name == "set_progress":
            run.progress.append(trigger_params)
        elif name == "show_output":
            run.result, run.outputs = trigger_params["results"], trigger_params["outputs"]
            run.error = run.result.get("error")
    return run


def run(uri: str, dataset_or_view, params: dict[str, Any], delegate: bool = False):
    """Execute (as the App does) or schedule (``delegate``) ``uri`` on a dataset or view."""
    if delegate:
        return foo.execute_operator(uri, {"view": dataset_or_view.view(), "params": params}, request_delegation=True)
    return run_in_app(uri, dataset_or_view.view(), params)


def expect_user_error(app_run: AppRun, pattern: str) -> str:
    """Assert the run ended in one readable line matching ``pattern`` (no traceback), and return it."""
    import re

    assert app_run.error, f"the run did not fail: {app_run.result}"
    assert "Traceback" not in app_run.error and "\n" not in app_run.error, app_run.error
    assert re.search(pattern, app_run.error), app_run.error
    if not app_run.rejected_by_form:
        assert app_run.triggered[-1:] == ["show_output"], "the App shows the error in the result dialog"
    return app_run.error
