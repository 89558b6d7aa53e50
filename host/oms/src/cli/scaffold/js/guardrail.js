// Order rules: refuse an order before anything is reserved or charged.
// Settings come from the tenant manifest's `[plugins.guardrail] settings`.
// A thrown value is the result's error: here, the list of violations.

function setting(settings, key) {
  for (const [k, v] of settings) if (k === key) return v;
  return undefined;
}

export const orderRules = {
  validate(order, settings) {
    const max = Number(setting(settings, "max_quantity") ?? "100");
    const violations = [];
    order.items.forEach((item, i) => {
      if (item.quantity > max) {
        violations.push({
          code: "MAX_QUANTITY_EXCEEDED",
          message: `quantity ${item.quantity} of ${item.sku} exceeds ${max}`,
          field: `/items/${i}/quantity`,
        });
      }
    });
    if (violations.length > 0) throw violations;
  },
};
