"""The bundled models: packaging, verifying and scoring them (``python -m experiments.release.<name>``)."""
