// Fraud assessment from the order and the context the host supplies.
// `s64` values (amounts) are BigInt; `u32` values are numbers.

export const risk = {
  assess(order, context, settings) {
    const reasons = [];
    if (context.recentOrderCount > 20) {
      reasons.push(`${context.recentOrderCount} orders in the last 24h`);
    }
    if (order.totalAmount > 1000000n) reasons.push("large order");
    return {
      decision: reasons.length === 0 ? "approve" : "review",
      score: 300 * reasons.length,
      reasons,
    };
  },
};
