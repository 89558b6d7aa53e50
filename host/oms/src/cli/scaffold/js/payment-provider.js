// A payment provider adapter. Reach the provider only through `send`
// (oms:plugin/outbound-http), to origins in the tenant's `allowed_origins`.
// Send `request.idempotencyKey` to the provider: the host retries with it.
// `retrieve` reads a payment back so the host can reconcile it.
// A thrown value is the result's error: `{ tag: "declined", val: {code,
// message} }` or `{ tag: "transient", val: "why" }`.

// eslint-disable-next-line no-unused-vars
import { send } from "oms:plugin/outbound-http@0.1.0";

function notYet(op) {
  throw {
    tag: "declined",
    val: { code: "NOT_IMPLEMENTED", message: `${op} is not implemented yet` },
  };
}

export const provider = {
  authorize(request, settings) {
    return notYet("authorize");
  },
  capture(request, settings) {
    return notYet("capture");
  },
  void(request, settings) {
    return notYet("void");
  },
  refund(request, settings) {
    return notYet("refund");
  },
};

export const paymentStatus = {
  retrieve(providerReference, settings) {
    throw { tag: "not-found", val: providerReference };
  },
};
