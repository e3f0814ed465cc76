"""Provider prices: the exact cost of a model call, from the bundled price catalog.

from aibill.pricing import Catalog, Usage
cost = Catalog().price("openai", "gpt-4o", Usage(input_tokens=1200, output_tokens=512), at)
cost.total  # Decimal('0.00812'), USD, exact
"""

from __future__ import annotations

from aibill.pricing.catalog import MAX_COUNT, Catalog, CostComponent, ProviderCost, Usage

__all__ = ["MAX_COUNT", "Catalog", "CostComponent", "ProviderCost", "Usage"]
