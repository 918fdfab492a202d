"""The AMPLIFY inference service: a FastAPI application over one of three back ends.

Layers: HTTP (``schemas``, ``codecs``, ``errors``, ``middleware``, ``routes``) knows nothing of the
back end; inference (``backends``, ``batching``, ``engine``) knows nothing of HTTP.
``service.app.create_app(ServiceSettings(...))`` builds the application.
"""
