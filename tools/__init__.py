"""Small stdlib-only helpers for the build (``dev.py``) and the tests."""
