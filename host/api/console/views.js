// One function per page. Each fills `main` and returns nothing; a page that
// watches something running returns a function that stops it.
"use strict";

const SLOTS = ["guardrail", "fraud-check", "payment-provider", "compensation-policy"];
const SCOPES = ["orders:read", "orders:write", "inventory:read", "inventory:write", "plugins:read", "plugins:write", "fulfilment:write", "webhooks:read", "webhooks:write", "steps:read"];
const ORDER_STATUSES = ["PENDING", "CONFIRMED", "REJECTED", "CANCELLED", "SHIPPED", "DELIVERED", "REQUIRES_ATTENTION", "RESOLVED"];
const SAGA_STATES = ["RUNNING", "COMPENSATING", "COMPLETED", "REJECTED", "CANCELLED", "STUCK", "RESOLVED"];
const FINAL = ["COMPLETED", "REJECTED", "CANCELLED", "RESOLVED"];

const views = {};

views.signin = function (main) {
  const input = h("input", { id: "token", type: "password", autocomplete: "current-password", required: true, size: 40 });
  const form = h("form", { class: "inline", id: "signin", onsubmit: async (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    try {
      const me = await get("/whoami");
      flash(`Signed in as ${me.name} (${me.role})`);
      location.hash = "#/sagas";
    } catch (err) {
      setToken(null);
      flash(`Sign-in failed — ${err.message}`, true);
    }
  } }, h("label", {}, "Operator token", input), h("button", { class: "primary", type: "submit" }, "Sign in"));
  main.append(h("h1", {}, "Sign in"), h("p", { class: "muted" }, "Use an operator token (oms operator create) or the bootstrap token."), form);
  input.focus();
};

views.tenants = async function (main) {
  const list = await get("/tenants");
  main.append(h("h1", {}, "Tenants"));
  main.append(table(["Tenant", "Name", "Status", "Revision", "Updated"], list.data.map((t) => h("tr", {},
    h("td", {}, h("a", { href: `#/tenant/${t.id}` }, t.id)), h("td", {}, t.name), h("td", {}, badge(t.status)),
    h("td", {}, t.revision), h("td", {}, `${when(t.updatedAt)} by ${t.updatedBy}`)))));

  main.append(h("h2", {}, "New tenant"));
  const from = h("select", { id: "copy-from" }, list.data.map((t) => h("option", { value: t.id }, t.id)));
  const id = h("input", { id: "new-tenant-id", required: true, pattern: "[a-z0-9-]+", placeholder: "initech" });
  const name = h("input", { id: "new-tenant-name", required: true, placeholder: "Initech" });
  const text = h("textarea", { id: "new-tenant-manifest", "aria-label": "Manifest (JSON)", spellcheck: "false" });
  const load = async () => {
    if (!from.value) return;
    const t = await get(`/tenants/${from.value}`);
    text.value = JSON.stringify(t.manifest, null, 2);
  };
  from.addEventListener("change", load);
  const form = h("form", { id: "new-tenant", onsubmit: async (e) => {
    e.preventDefault();
    let manifest;
    try { manifest = JSON.parse(text.value); } catch (err) { return flash(`The manifest is not JSON — ${err.message}`, true); }
    manifest.id = id.value.trim();
    manifest.name = name.value.trim();
    const made = await act(`Create tenant ${manifest.id}`, () => post("/tenants", manifest));
    if (made) location.hash = `#/tenant/${made.id}`;
  } },
  h("div", { class: "row" }, h("label", {}, "Id", id), h("label", {}, "Name", name), h("label", {}, "Start from", from)),
  h("p", { class: "muted" }, "Settings shown as ******** are secrets: replace them with the new tenant's own."),
  text, h("div", { class: "row" }, h("button", { class: "primary", type: "submit" }, "Create tenant")));
  main.append(form);
  await load();
};

function keyRow(tenant, k, refresh) {
  const live = k.status === "ACTIVE" || k.status === "ROTATING";
  return h("tr", {}, h("td", {}, k.name, h("div", { class: "muted" }, k.id)), h("td", {}, k.scopes.join(" ")),
    h("td", {}, badge(k.status), k.expiresAt ? h("div", { class: "muted" }, `until ${when(k.expiresAt)}`) : null),
    h("td", { class: "hide-narrow" }, when(k.lastUsedAt)),
    h("td", {}, live ? [
      h("button", { onclick: async () => { const r = await act(`Rotate ${k.id}`, () => post(`/tenants/${tenant}/keys/${k.id}/rotate`, { graceSeconds: 86400 })); if (r) refresh(r); } }, "Rotate"), " ",
      h("button", { class: "danger", onclick: async () => { if (await act(`Revoke ${k.id}`, () => post(`/tenants/${tenant}/keys/${k.id}/revoke`))) refresh(); } }, "Revoke"),
    ] : null));
}

views.tenant = async function (main, id) {
  const [t, keys] = await Promise.all([get(`/tenants/${id}`), get(`/tenants/${id}/keys`)]);
  const again = (issued) => route().then(() => issued && showSecret(issued));
  main.append(h("h1", {}, `${t.name} `, badge(t.status)),
    h("p", { class: "muted" }, `${t.id} · revision ${t.revision} · updated ${when(t.updatedAt)} by ${t.updatedBy}`),
    h("div", { class: "row" },
      t.status === "SUSPENDED"
        ? h("button", { onclick: async () => { if (await act("Resume", () => post(`/tenants/${id}/resume`))) again(); } }, "Resume")
        : h("button", { class: "danger", onclick: async () => { if (await act("Suspend", () => post(`/tenants/${id}/suspend`))) again(); } }, "Suspend"),
      h("a", { href: `#/orders?tenant=${id}` }, "Orders"), h("a", { href: `#/plugins?tenant=${id}` }, "Plugins")));

  main.append(h("h2", {}, "API keys"), h("div", { id: "secret" }));
  main.append(table(["Key", "Scopes", "Status", "Last used", ""], keys.data.map((k) => keyRow(id, k, again))));
  const name = h("input", { id: "key-name", required: true, placeholder: "web shop" });
  const boxes = SCOPES.map((s) => h("input", { type: "checkbox", value: s, name: "scope" }));
  main.append(h("form", { class: "inline", id: "new-key", onsubmit: async (e) => {
    e.preventDefault();
    const scopes = boxes.filter((b) => b.checked).map((b) => b.value);
    const made = await act("Create key", () => post(`/tenants/${id}/keys`, { name: name.value, scopes }));
    if (made) again(made);
  } }, h("label", {}, "Name", name), boxes.map((b) => h("label", { class: "check" }, b, b.value)),
  h("button", { class: "primary", type: "submit" }, "Create key")));

  main.append(h("h2", {}, "Manifest"));
  const text = h("textarea", { id: "manifest", "aria-label": "Manifest (JSON)", spellcheck: "false" }, JSON.stringify(t.manifest, null, 2));
  main.append(h("form", { onsubmit: async (e) => {
    e.preventDefault();
    let m;
    try { m = JSON.parse(text.value); } catch (err) { return flash(`The manifest is not JSON — ${err.message}`, true); }
    const saved = await call("PUT", `/tenants/${id}`, m).then((r) => { flash("Manifest saved"); return r; }, (err) => flash(`Saving failed — ${err.message}`, true));
    if (saved) again();
  } }, text, h("div", { class: "row" }, h("button", { class: "primary", type: "submit" }, "Save manifest"))));
};

function showSecret(issued) {
  const box = document.getElementById("secret");
  if (!box) return;
  box.replaceChildren(h("p", {}, `Secret of ${issued.id} — shown this once:`), h("p", { class: "secret", id: "new-secret" }, issued.secret));
}

views.orders = async function (main, q) {
  const tenants = (await get("/tenants")).data.map((t) => t.id);
  const tenant = q.get("tenant") || tenants[0];
  const pick = (name, options, label) => h("label", {}, label, h("select", { name }, h("option", { value: "" }, "any"),
    options.map((o) => h("option", { value: o, selected: q.get(name) === o }, o))));
  const form = h("form", { class: "inline", id: "order-search", onsubmit: (e) => {
    e.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    location.hash = `#/orders?${params}`;
  } },
  h("label", {}, "Tenant", h("select", { name: "tenant" }, tenants.map((t) => h("option", { value: t, selected: t === tenant }, t)))),
  h("label", {}, "Order id", h("input", { name: "id", value: q.get("id") || "", placeholder: "ord_…" })),
  h("label", {}, "Customer", h("input", { name: "customer", value: q.get("customer") || "" })),
  pick("status", ORDER_STATUSES, "Status"), pick("sagaState", SAGA_STATES, "Saga state"),
  h("button", { class: "primary", type: "submit" }, "Search"));
  main.append(h("h1", {}, "Orders"), form);
  if (q.get("id")) { location.hash = `#/order/${tenant}/${q.get("id").trim()}`; return; }
  const params = new URLSearchParams({ limit: "50" });
  for (const k of ["status", "sagaState", "customer"]) if (q.get(k)) params.set(k, q.get(k));
  const page = await get(`/tenants/${tenant}/orders?${params}`);
  main.append(table(["Order", "Customer", "Status", "Saga", "Total", "Placed"], page.data.map((o) => h("tr", {},
    h("td", {}, h("a", { href: `#/order/${tenant}/${o.id}` }, o.id)), h("td", {}, o.customerId),
    h("td", {}, badge(o.status)), h("td", {}, badge(o.sagaState)), h("td", {}, money(o.totalAmount, o.currency)),
    h("td", { class: "hide-narrow" }, when(o.createdAt))))));
};

function sagaActions(tenant, id, after) {
  const reason = h("input", { name: "reason", placeholder: "reason (compensate, resolve)", "aria-label": "Reason" });
  const run = (action) => async () => {
    const body = reason.value.trim() ? { reason: reason.value.trim() } : {};
    if (await act(`${action} ${id}`, () => post(`/tenants/${tenant}/orders/${id}/saga/${action}`, body))) after();
  };
  return h("div", { class: "row" }, h("button", { class: "primary", onclick: run("retry") }, "Retry"), reason,
    h("button", { onclick: run("compensate") }, "Compensate"), h("button", { class: "danger", onclick: run("resolve") }, "Resolve"));
}

function timelineEntry(e) {
  const d = e.data || {};
  const kind = /failed|stuck/i.test(e.type) ? "fail" : /compensat|released|void|refund/i.test(e.type) ? "comp" : "ok";
  const facts = [
    d.step && `step ${d.step}`, d.compensation && `compensation ${d.compensation}`, d.attempt && `attempt ${d.attempt}`,
    d.pluginVersion && `plugin ${d.pluginVersion}`, d.canary && "canary", d.fuelUsed !== undefined && `fuel ${d.fuelUsed}`,
    d.durationUs !== undefined && `${(d.durationUs / 1000).toFixed(1)} ms`,
    d.failure && `${d.failure.code || "failed"}: ${d.failure.message || ""}`, d.error && `error ${typeof d.error === "string" ? d.error : JSON.stringify(d.error)}`,
    d.reason && `reason ${d.reason}`, d.operator && `by ${d.operator}`,
  ].filter(Boolean);
  return h("li", { class: kind }, h("strong", {}, e.type), " ", h("span", { class: "muted" }, when(e.at)), h("div", {}, facts.join(" · ")));
}

views.order = async function (main, tenant, id) {
  let timer = null;
  const draw = async () => {
    const s = await get(`/tenants/${tenant}/orders/${id}/saga`);
    const body = h("div", { id: "order-view" },
      h("h1", {}, `Order ${id}`),
      h("p", {}, "order ", badge(s.status), " saga ", h("span", { id: "saga-state" }, badge(s.sagaState)), " ",
        h("span", { class: "muted" }, `${tenant} · ${money(s.totalAmount, s.currency)} · payment ${s.paymentStatus}`)),
      s.stoppedAt ? h("p", {}, `Stopped at ${s.stoppedAt} (attempt ${s.attempt})${s.ending ? ` — ${s.ending}` : ""}`) : null,
      FINAL.includes(s.sagaState) ? null : sagaActions(tenant, id, draw),
      h("h2", {}, "Timeline"), h("ol", { class: "timeline" }, s.history.map(timelineEntry)),
      h("h2", {}, "Payments"), table(["Operation", "Amount", "Status", "Reference", "At"], s.payments.map((p) => h("tr", {},
        h("td", {}, p.type), h("td", {}, money(p.amount, p.currency)), h("td", {}, badge(p.status), p.errorCode ? ` ${p.errorCode}` : ""),
        h("td", {}, p.providerReference || "—"), h("td", {}, when(p.at))))),
      h("h2", {}, "Stock"), table(["SKU", "State", "Quantity"], s.stock.map((r) => h("tr", {}, h("td", {}, r.sku), h("td", {}, r.state), h("td", {}, r.quantity)))));
    document.getElementById("order-view")?.remove();
    main.append(body);
    // Watch a saga still moving: the timeline grows while it runs.
    clearTimeout(timer);
    if (!FINAL.includes(s.sagaState)) timer = setTimeout(() => draw().catch((e) => flash(e.message, true)), 1000);
  };
  await draw();
  return () => clearTimeout(timer);
};

views.sagas = async function (main, q) {
  const state = q.get("state") || "STUCK";
  const s = h("select", { name: "state", onchange: () => { location.hash = `#/sagas?state=${s.value}`; } },
    ["STUCK", "COMPENSATING", "RUNNING"].map((x) => h("option", { value: x, selected: x === state }, x)));
  main.append(h("h1", {}, "Sagas"), h("div", { class: "row" }, h("label", {}, "State", s)));
  const list = await get(`/sagas?state=${state}`);
  main.append(h("div", { id: "saga-list" }, table(["Order", "Stopped at", "Holds", "Since", "Actions"], list.data.map((x) => h("tr", { "data-order": x.orderId },
    h("td", {}, h("a", { href: `#/order/${x.tenantId}/${x.orderId}` }, x.orderId), h("div", { class: "muted" }, `${x.tenantId} · ${x.status}`)),
    h("td", {}, x.stoppedAt || "—", h("div", { class: "muted" }, x.ending || "")),
    h("td", {}, `${money(x.totalAmount, x.currency)} (${x.paymentStatus})`, h("div", { class: "muted" }, x.stockHeld.map((r) => `${r.quantity}× ${r.sku}`).join(", ") || "no stock")),
    h("td", {}, when(x.updatedAt)),
    h("td", {}, sagaActions(x.tenantId, x.orderId, () => route())))))));
};

views.plugins = async function (main, q) {
  const tenants = (await get("/tenants")).data.map((t) => t.id);
  const tenant = q.get("tenant") || tenants[0];
  const slot = q.get("slot") || SLOTS[0];
  const go = () => { location.hash = `#/plugins?tenant=${ts.value}&slot=${ss.value}`; };
  const ts = h("select", { name: "tenant", onchange: go }, tenants.map((t) => h("option", { value: t, selected: t === tenant }, t)));
  const ss = h("select", { name: "slot", onchange: go }, SLOTS.map((x) => h("option", { value: x, selected: x === slot }, x)));
  main.append(h("h1", {}, "Plugins"), h("div", { class: "row" }, h("label", {}, "Tenant", ts), h("label", {}, "Slot", ss)));
  const base = `/tenants/${tenant}/plugins/${slot}`;
  const [versions, shadow, canary, stats, logs] = await Promise.all([
    get(`${base}/versions`), get(`${base}/shadow`), get(`${base}/canary`), get(`${base}/stats`), get(`${base}/logs?limit=50`)]);
  main.append(h("h2", {}, "Versions"), h("p", { id: "active-version" }, `Active: version ${versions.activeVersion ?? "—"}`,
    versions.previousVersion ? ` · previous ${versions.previousVersion}` : ""),
  table(["Version", "Digest", "Status", "Uploaded", ""], versions.data.map((v) => h("tr", { "data-version": v.version },
    h("td", {}, v.version), h("td", {}, v.digest.slice(0, 12)), h("td", {}, badge(v.status)),
    h("td", { class: "hide-narrow" }, `${when(v.uploadedAt)} by ${v.uploadedBy}`),
    h("td", {}, v.status === "active" ? null : h("button", { onclick: async () => { if (await act(`Activate version ${v.version}`, () => post(`${base}/activate`, { version: v.version }))) route(); } }, "Activate"))))),
  h("div", { class: "row" }, h("button", { id: "rollback", disabled: !versions.previousVersion, onclick: async () => { if (await act("Roll back", () => post(`${base}/rollback`))) route(); } }, "Roll back")));
  main.append(h("h2", {}, "Shadow"), h("p", {}, shadow.shadowVersion
    ? `Version ${shadow.shadowVersion}: ${shadow.calls} calls, ${shadow.agreements} agreed, ${shadow.divergences} diverged`
    : "No shadow version."));
  main.append(h("h2", {}, "Canary"), h("p", {}, canary.canary
    ? `Version ${canary.canary.version} on ${canary.canary.percent} % of orders, started by ${canary.canary.startedBy}`
    : "No canary running."));
  main.append(h("h2", {}, "Stats"), table(["Version", "Calls", "Succeeded", "Traps", "Timeouts", "Out of fuel", "Fuel used"], stats.data.map((s) => h("tr", {},
    h("td", {}, s.version), h("td", {}, s.calls), h("td", {}, s.succeeded), h("td", {}, s.traps), h("td", {}, s.timeouts),
    h("td", {}, s.out_of_fuel ?? s.outOfFuel), h("td", {}, s.fuel_used_total ?? s.fuelUsedTotal)))));
  main.append(h("h2", {}, "Logs"), table(["At", "Version", "Line"], logs.data.map((l) => h("tr", {}, h("td", {}, when(l.at)), h("td", {}, l.version), h("td", {}, l.line)))));
};

views.dlq = async function (main) {
  const d = await get("/dlq");
  main.append(h("h1", {}, "Dead letters"));
  if (d.transport !== "kafka") {
    main.append(h("p", {}, "This host runs the in-process transport: saga commands never leave the database, so there is no dead-letter topic."));
    return;
  }
  main.append(h("p", { class: "muted" }, "Replay with: oms dlq replay <id>"),
    table(["Id", "From", "Error", "When"], d.data.map((x) => h("tr", {}, h("td", {}, x.id), h("td", {}, x.originTopic),
      h("td", {}, `${x.errorCode}: ${x.error}`), h("td", {}, when(x.deadAt))))));
};

views.operators = async function (main) {
  main.append(h("h1", {}, "Operators"));
  try {
    const ops = await get("/operators");
    main.append(table(["Name", "Role", "Status", "Last used", ""], ops.data.map((o) => h("tr", {},
      h("td", {}, o.name), h("td", {}, o.role), h("td", {}, badge(o.status)), h("td", {}, when(o.lastUsedAt)),
      h("td", {}, o.status === "ACTIVE" ? h("button", { class: "danger", onclick: async () => { if (await act(`Revoke ${o.name}`, () => post(`/operators/${o.name}/revoke`))) route(); } }, "Revoke") : null)))));
    const name = h("input", { required: true, placeholder: "ada" });
    const role = h("select", {}, h("option", { value: "viewer" }, "viewer"), h("option", { value: "admin" }, "admin"));
    const out = h("div", {});
    main.append(h("form", { class: "inline", onsubmit: async (e) => {
      e.preventDefault();
      const made = await act(`Create operator ${name.value}`, () => post("/operators", { name: name.value, role: role.value }));
      if (made) out.replaceChildren(h("p", {}, "Token — shown this once:"), h("p", { class: "secret" }, made.token));
    } }, h("label", {}, "Name", name), h("label", {}, "Role", role), h("button", { class: "primary", type: "submit" }, "Create operator")), out);
  } catch (e) {
    main.append(h("p", { class: "muted" }, e.code === "ROLE_REQUIRED" ? "Managing operators needs the admin role." : e.message));
  }
  const log = await get("/audit?limit=100");
  main.append(h("h2", {}, "Audit log"), table(["When", "Operator", "From", "Action", "Target"], log.data.map((a) => h("tr", {},
    h("td", {}, when(a.at)), h("td", {}, a.operator), h("td", {}, a.source), h("td", {}, a.action),
    h("td", {}, [a.tenant, a.target].filter(Boolean).join(" / "), a.detail ? h("div", { class: "muted" }, a.detail) : null)))));
};
