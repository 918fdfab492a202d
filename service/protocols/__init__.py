"""The field's protocols over the same engine: openpi's WebSocket policy protocol (:mod:`.openpi`)
and the KServe v2 / Open Inference Protocol (:mod:`.v2`). Wire formats and validation only; the
routes live in ``service/routes/openpi.py`` and ``service/routes/v2.py``."""
