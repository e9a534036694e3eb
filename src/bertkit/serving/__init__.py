"""`bertkit serve`: an HTTP server over the task pipelines (needs the `serve` extra: fastapi, uvicorn,
prometheus-client). app.py: routes and limits; batcher.py: dynamic batching; schemas.py: the bodies; metrics.py:
Prometheus; server.py: uvicorn with a drain on SIGTERM; static/: the web page."""
