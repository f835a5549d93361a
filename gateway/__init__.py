"""cancel-gateway: one canonical cancel request, many provider dialects, one envelope."""

__version__ = "0.1.0"
