"""Root conftest: makes the shared fixtures of tests/conftest.py visible to plugins/*/tests too."""

pytest_plugins = ["tests.conftest"]
