"""Speculative decoding: compatibility check, vanilla-vs-speculative comparison, advisor."""
