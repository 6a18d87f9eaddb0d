"""CVAT serverless (Nuclio) functions on the shared core.

``detector``, ``interactor`` and ``tracker`` each expose Nuclio's
``init_context(context)`` / ``handler(context, event)``; the deployable
function folders under ``nuclio/functions/`` hold their ``function.yaml`` and a
``main.py`` that re-exports them.
"""
