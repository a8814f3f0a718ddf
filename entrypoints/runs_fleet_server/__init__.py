"""The runs-fleet server: GitHub webhooks in, runners out.

A Starlette app (``app.py``) takes webhooks and agent reports, answers health, readiness,
metrics and a small read-only jobs API; ``serve.py`` runs it under uvicorn together with
the dispatch worker, and shuts both down gracefully. ``bootstrap.py`` is the one place
where the server's adapters and use cases are wired.
"""
