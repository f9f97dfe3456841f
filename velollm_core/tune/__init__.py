"""Configuration tuning shared by every runtime: render proposals, write systemd drop-ins, `velollm optimize`.

The rules live in the plugins (``propose_config``); the core only shows, renders and applies them.
"""
