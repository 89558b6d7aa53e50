"""Order rules: refuse an order before anything is reserved or charged.
Settings come from the tenant manifest's `[plugins.guardrail] settings`."""

from typing import List, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.order_rules import Violation
from wit_world.imports.types import Order


class OrderRules(exports.OrderRules):
    def validate(self, order: Order, settings: List[Tuple[str, str]]) -> None:
        limit = int(dict(settings).get("max_quantity", "100"))
        violations = [
            Violation(
                code="MAX_QUANTITY_EXCEEDED",
                message=f"quantity {item.quantity} of {item.sku} exceeds {limit}",
                field=f"/items/{i}/quantity",
            )
            for i, item in enumerate(order.items)
            if item.quantity > limit
        ]
        if violations:
            raise Err(violations)
