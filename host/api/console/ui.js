// Helpers the views share: building elements (never from HTML strings, so
// tenant data cannot inject markup), calling the admin API with the
// operator's token, and telling the operator what happened.
"use strict";

const TOKEN_KEY = "oms.console.token";

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }
function setToken(t) { t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY); }

class ApiFailure extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(`${e.code || status}: ${e.message || "request failed"}`);
    this.status = status;
    this.code = e.code;
    this.body = body;
  }
}

async function call(method, path, body) {
  const init = { method, headers: { authorization: `Bearer ${token()}` } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(`/admin/v1${path}`, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: { message: text } }; }
  if (r.status === 401) {
    setToken(null);
    location.hash = "#/signin";
  }
  if (!r.ok) throw new ApiFailure(r.status, data);
  return data;
}
const get = (path) => call("GET", path);
const post = (path, body) => call("POST", path, body === undefined ? {} : body);
const put = (path, body) => call("PUT", path, body);

function flash(message, isError) {
  const box = document.getElementById("flash");
  box.replaceChildren(h("p", { class: isError ? "error" : "" }, message));
}
function clearFlash() { document.getElementById("flash").replaceChildren(); }

// Runs an operator action: its outcome is flashed, an error never lost.
async function act(label, fn) {
  try {
    const out = await fn();
    flash(`${label}: done`);
    return out;
  } catch (e) {
    flash(`${label} failed — ${e.message}`, true);
    return undefined;
  }
}

function badge(text) {
  const t = String(text || "");
  const cls = /COMPLETED|CONFIRMED|ACTIVE|DELIVERED|active/.test(t) ? "good"
    : /STUCK|REJECTED|SUSPENDED|REVOKED|FAILED|REQUIRES_ATTENTION|EXPIRED/.test(t) ? "bad"
    : /COMPENSATING|RUNNING|PENDING|ROTATING/.test(t) ? "warn" : "";
  return h("span", { class: `badge ${cls}` }, t || "—");
}

function table(headers, rows, caption) {
  return h("div", { class: "scroll" },
    h("table", {},
      caption ? h("caption", { class: "muted" }, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.length ? rows : [h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "nothing here"))])));
}

function money(minor, currency) {
  if (minor === null || minor === undefined) return "—";
  return `${(minor / 100).toFixed(2)} ${currency || ""}`.trim();
}

function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+.*$/, "") : "—"; }
