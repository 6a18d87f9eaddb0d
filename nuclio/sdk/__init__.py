"""cvat-sdk functions, run by ``cvat-cli`` (``task auto-annotate`` or an agent) rather than by Nuclio.

``detection``, ``interaction`` and ``tracking`` each expose ``create(**params)``, which cvat-cli
calls with its ``-p`` parameters; ``params`` turns those into a run spec.
"""
