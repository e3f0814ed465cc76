"""Fixtures shared by the end-to-end tests: ``launch`` starts real servers."""

from tests.e2e.test_serve import launch

__all__ = ["launch"]
