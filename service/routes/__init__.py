"""HTTP routes: ``inference`` (the model endpoints) and ``ops`` (health, readiness, metadata, metrics)."""
