// Loyalty points in JavaScript: the same step as the Rust `loyalty-points`
// plugin (plugins/loyalty-points/src/lib.rs), so either can be a version of
// the same step, shadow the other and must agree. Built with
// componentize-js by ./build.
//
// State (the step's namespace): `customer:<id>` holds the customer's
// balance, a decimal integer.
//
// Settings (all optional):
// - `points_per_unit`: points per whole unit of the order's currency
//   (default 1; an order of 19.99 earns 19).
// - `minor_units`: minor units per whole unit (default 100).
// - `notify_url`: where to tell a loyalty service of each award, by POST
//   with the step's idempotency key (its origin must be in the step's
//   `allowed_origins`); a failure there is transient.

import { decrement, increment } from "oms:plugin/step-state@0.1.0";
import { send } from "oms:plugin/outbound-http@0.1.0";

// componentize-js maps a thrown value to the result's error.
function stepError(code, message, transient) {
  return { code, message, transient };
}

function setting(settings, key, fallback) {
  for (const [k, v] of settings) {
    if (k !== key) continue;
    if (!/^-?\d+$/.test(v)) {
      throw stepError("BAD_SETTING", `${key} = "${v}" is not an integer`, false);
    }
    return BigInt(v);
  }
  return fallback;
}

// A result-typed import throws its error (the variant in `payload`).
// A negative s64 passed to an import traps in componentize-js 0.23
// (ComponentizeJS#343), so what is taken away goes through `decrement`.
function add(key, delta) {
  try {
    return delta < 0n ? decrement(key, -delta) : increment(key, delta);
  } catch (e) {
    const err = e.payload ?? { tag: "unavailable", val: String(e) };
    throw stepError("STATE_ERROR", String(err.val), err.tag === "unavailable");
  }
}

function key(order) {
  return `customer:${order.customerId}`;
}

function notify(url, context, order, awarded) {
  const body = JSON.stringify({
    orderId: order.id,
    customerId: order.customerId,
    awarded: Number(awarded),
  });
  let response;
  try {
    response = send({
      method: "POST",
      url,
      headers: [
        ["content-type", "application/json"],
        ["idempotency-key", context.idempotencyKey],
      ],
      body: new TextEncoder().encode(body),
    });
  } catch (e) {
    const err = e.payload ?? { tag: String(e) };
    throw stepError("LOYALTY_SERVICE_UNAVAILABLE", `${err.tag} ${err.val ?? ""}`.trim(), true);
  }
  if (response.status < 200 || response.status >= 300) {
    throw stepError(
      "LOYALTY_SERVICE_UNAVAILABLE",
      `the loyalty service answered ${response.status}`,
      true,
    );
  }
}

export const customStep = {
  run(order, context, settings) {
    const perUnit = setting(settings, "points_per_unit", 1n);
    let minor = setting(settings, "minor_units", 100n);
    if (minor < 1n) minor = 1n;
    let earned = (BigInt(order.totalAmount) / minor) * perUnit;
    if (earned < 0n) earned = 0n;
    const balance = add(key(order), earned);
    for (const [k, v] of settings) {
      if (k === "notify_url") notify(v, context, order, earned);
    }
    // What compensate needs: how many to take back; the same text as the
    // Rust version's, so the two agree in shadow.
    return `{"awarded":${earned},"balance":${balance}}`;
  },

  compensate(order, context, output, settings) {
    const found = /"awarded":(-?\d+)/.exec(output);
    if (!found) {
      throw stepError("BAD_OUTPUT", `no points awarded in ${JSON.stringify(output)}`, false);
    }
    add(key(order), -BigInt(found[1]));
  },
};
