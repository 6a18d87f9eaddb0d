"""Nuclio handlers: CVAT's serverless functions call ``init_context`` once per worker, then ``handler``.

``detector``, ``interactor`` and ``tracker`` are the three functions; ``protocol`` reads
CVAT's requests and writes its answers (with the function's limits), ``cache`` keeps image
embeddings and tracking sessions between requests, ``tracker_state`` is the state CVAT
carries between a tracker's calls. The function folders in ``nuclio/serverless/`` import them.
"""
