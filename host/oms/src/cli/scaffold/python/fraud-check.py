"""Fraud assessment from the order and the context the host supplies."""

from typing import List, Tuple

from wit_world import exports
from wit_world.exports.risk import Assessment, CustomerContext, Decision
from wit_world.imports.types import Order


class Risk(exports.Risk):
    def assess(
        self, order: Order, context: CustomerContext, settings: List[Tuple[str, str]]
    ) -> Assessment:
        reasons = []
        if context.recent_order_count > 20:
            reasons.append(f"{context.recent_order_count} orders in the last 24h")
        if order.total_amount > 1_000_000:
            reasons.append("large order")
        decision = Decision.REVIEW if reasons else Decision.APPROVE
        return Assessment(decision=decision, score=300 * len(reasons), reasons=reasons)
