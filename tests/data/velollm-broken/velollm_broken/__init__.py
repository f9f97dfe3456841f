"""Raises on import, as a buggy third-party plugin would."""

raise RuntimeError("velollm-broken exploded on import")
