// Order rules in JavaScript: the same limits as the Rust `guardrail-limits`
// plugin (plugins/guardrail-limits/src/rules.rs), so the two can shadow each
// other and must agree. Built with componentize-js by ./build.
//
// Settings (all optional):
// - `max_quantity`: largest quantity on one line (default 100).
// - `max_lines`: most lines on one order (default 50).
// - `max_order_total`: largest order total in minor units (default: none).
// - `allowed_countries`: comma-separated ISO codes to ship to (default: any).

function setting(settings, key) {
  for (const [k, v] of settings) {
    if (k === key) return v;
  }
  return undefined;
}

function number(settings, key) {
  const raw = setting(settings, key);
  if (raw === undefined || !/^\s*-?\d+\s*$/.test(raw)) return undefined;
  return BigInt(raw.trim());
}

export const orderRules = {
  // Returns nothing when the order passes; throws the list of violations
  // (componentize-js maps a thrown value to the result's error).
  validate(order, settings) {
    const maxQuantity = number(settings, "max_quantity") ?? 100n;
    const maxLines = number(settings, "max_lines") ?? 50n;
    const violations = [];
    if (BigInt(order.items.length) > maxLines) {
      violations.push({
        code: "TOO_MANY_LINES",
        message: `an order may have at most ${maxLines} lines`,
        field: "/items",
      });
    }
    order.items.forEach((item, i) => {
      if (BigInt(item.quantity) > maxQuantity) {
        violations.push({
          code: "MAX_QUANTITY_EXCEEDED",
          message: `quantity ${item.quantity} of ${item.sku} exceeds the limit of ${maxQuantity} per line`,
          field: `/items/${i}/quantity`,
        });
      }
    });
    const maxTotal = number(settings, "max_order_total");
    if (maxTotal !== undefined && BigInt(order.totalAmount) > maxTotal) {
      violations.push({
        code: "ORDER_TOTAL_EXCEEDED",
        message: `order total ${order.totalAmount} ${order.currency} exceeds the limit of ${maxTotal}`,
        field: "/items",
      });
    }
    const allowed = setting(settings, "allowed_countries");
    if (
      allowed !== undefined &&
      !allowed.split(",").some((c) => c.trim().toUpperCase() === order.shippingAddress.country.toUpperCase())
    ) {
      violations.push({
        code: "COUNTRY_NOT_SERVED",
        message: `we do not ship to ${order.shippingAddress.country}`,
        field: "/shippingAddress/country",
      });
    }
    if (violations.length > 0) throw violations;
  },
};
