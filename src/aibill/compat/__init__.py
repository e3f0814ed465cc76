"""Compatibility layers that keep older callers working on top of aibill.

``aibill.compat.gateway`` is the seed's billing service interface (the names
the original gateway's code calls: ``getService(...)``, ``recordUsage(...)``,
``checkBalance(...)``, ...). See ``docs/compat.md``.
"""

from __future__ import annotations

__all__ = ["gateway"]
