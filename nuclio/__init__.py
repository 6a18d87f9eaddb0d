"""CVAT on the shared core: what CVAT calls, what cvat-sdk runs, and what labels a task.

Layout::

    handlers/     Nuclio handlers: detector, interactor, tracker each expose
                  ``init_context(context)`` / ``handler(context, event)``; protocol (the
                  wire format and limits), cache, tracker_state
    serverless/   the deployable function folders (function.yaml, function-gpu.yaml and a
                  main.py importing a handler), as CVAT's own ``serverless/`` tree
    generate.py   writes function folders: ``python -m gsam2.nuclio.generate OUTDIR``
    deploy.sh     deploys function folders into a CVAT's Nuclio
    sdk/          cvat-sdk functions (``cvat-cli --function-module gsam2.nuclio.sdk.detection``,
                  ``.interaction``, ``.tracking``); params turns ``-p`` parameters into a run spec
    rest/         task_labeling: ``gsam2 cvat annotate|track`` labels a task over CVAT's REST API

The other modules here (``detector``, ``interactor``, ``tracker``, ``sdk_detection``,
``sdk_interaction``, ``sdk_tracking``, ``functions``) are the old paths, kept for
compatibility as aliases of the new ones.
"""
