// What to do when a saga step fails: retry, or undo what was done.
// The host checks the plan: it must undo exactly what holds money or stock.
// Enums are strings ("capture-payment"); variants are `{ tag, val }`.

export const policy = {
  decide(failure, saga, settings) {
    if (failure.transient && failure.attempt < 3) {
      return {
        decision: { tag: "retry", val: 200 << failure.attempt },
        actions: [],
        notify: [],
        reason: failure.code,
      };
    }
    const captured = saga.completed.includes("capture-payment");
    const actions = [];
    for (const step of [...saga.completed].reverse()) {
      if (step === "capture-payment") actions.push("refund-payment");
      if (step === "authorize-payment" && !captured) actions.push("void-payment");
      if (step === "reserve-inventory") actions.push("release-inventory");
    }
    return {
      decision: { tag: "compensate" },
      actions,
      notify: ["customer"],
      reason: failure.code,
    };
  },
};
