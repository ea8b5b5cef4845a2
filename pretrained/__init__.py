"""The released models, one folder each (config.json, params.msgpack, export.json).

Installed as the package data ``kdjax.pretrained`` so that ``kdjax.load("realtime_kd_x2")``
finds them from any directory; ``kdjax.weights.released_models()`` lists them.
"""
