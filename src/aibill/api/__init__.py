"""aibill's HTTP API: every library operation under ``/v1``, for any language."""

from aibill.api.app import create_app

__all__ = ["create_app"]
