// A saga step of the tenant's own, placed by naming it in the manifest's
// `saga.steps` and configured in its `[steps.<name>]` section. Its state
// (oms:plugin/step-state) is the tenant's and this step's alone; what a
// call writes is committed with the saga's transition, and only if the call
// succeeds. A thrown `{ code, message, transient }` is the step's error.
// Take away with `decrement`: a negative BigInt passed to an import traps
// in componentize-js 0.23 (ComponentizeJS#343).

import { decrement, increment } from "oms:plugin/step-state@0.1.0";

function stateError(e) {
  const err = e.payload ?? { tag: "unavailable", val: String(e) };
  return { code: "STATE_ERROR", message: String(err.val), transient: err.tag === "unavailable" };
}

export const customStep = {
  run(order, context, settings) {
    // Counts the customer's orders; the output goes to `compensate`.
    try {
      return String(increment(`orders:${order.customerId}`, 1n));
    } catch (e) {
      throw stateError(e);
    }
  },

  compensate(order, context, output, settings) {
    try {
      decrement(`orders:${order.customerId}`, 1n);
    } catch (e) {
      throw stateError(e);
    }
  },
};
