"""Order rules in Python: the same limits as the Rust `guardrail-limits`
plugin, so the two can shadow each other and must agree.

Settings (all optional):
- `max_quantity`: largest quantity on one line (default 100).
- `max_lines`: most lines on one order (default 50).
- `max_order_total`: largest order total in minor units (default: none).
- `allowed_countries`: comma-separated ISO codes to ship to (default: any).
"""

from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.order_rules import Violation
from wit_world.imports.types import Order


def _setting(settings: List[Tuple[str, str]], key: str) -> Optional[str]:
    for k, v in settings:
        if k == key:
            return v
    return None


def _number(settings: List[Tuple[str, str]], key: str) -> Optional[int]:
    value = _setting(settings, key)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


class OrderRules(exports.OrderRules):
    def validate(self, order: Order, settings: List[Tuple[str, str]]) -> None:
        max_quantity = _number(settings, "max_quantity")
        max_quantity = 100 if max_quantity is None else max_quantity
        max_lines = _number(settings, "max_lines")
        max_lines = 50 if max_lines is None else max_lines
        violations: List[Violation] = []

        if len(order.items) > max_lines:
            violations.append(
                Violation("TOO_MANY_LINES", f"an order may have at most {max_lines} lines", "/items")
            )
        for i, item in enumerate(order.items):
            if item.quantity > max_quantity:
                violations.append(
                    Violation(
                        "MAX_QUANTITY_EXCEEDED",
                        f"quantity {item.quantity} of {item.sku} exceeds the limit of {max_quantity} per line",
                        f"/items/{i}/quantity",
                    )
                )
        max_total = _number(settings, "max_order_total")
        if max_total is not None and order.total_amount > max_total:
            violations.append(
                Violation(
                    "ORDER_TOTAL_EXCEEDED",
                    f"order total {order.total_amount} {order.currency} exceeds the limit of {max_total}",
                    "/items",
                )
            )
        allowed = _setting(settings, "allowed_countries")
        if allowed is not None:
            country = order.shipping_address.country
            if not any(c.strip().upper() == country.upper() for c in allowed.split(",")):
                violations.append(
                    Violation("COUNTRY_NOT_SERVED", f"we do not ship to {country}", "/shippingAddress/country")
                )

        if violations:
            raise Err(violations)
