// The router: `#/page/arg…?query` picks a view; signing in is needed first.
"use strict";

let stopView = null;

async function route() {
  if (stopView) { stopView(); stopView = null; }
  const [path, query] = (location.hash.slice(1) || "/sagas").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const q = new URLSearchParams(query || "");
  const main = document.getElementById("main");
  const nav = document.getElementById("nav");
  main.replaceChildren();
  if (!token() && parts[0] !== "signin") { location.hash = "#/signin"; return; }
  nav.hidden = !token();
  for (const a of nav.querySelectorAll("a")) {
    a.toggleAttribute("aria-current", a.getAttribute("href") === `#/${parts[0]}`);
    if (a.hasAttribute("aria-current")) a.setAttribute("aria-current", "page");
  }
  const view = views[parts[0]];
  if (!view) { main.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/sagas" }, "Back to sagas"))); return; }
  try {
    const stop = await view(main, ...(parts.length > 1 ? parts.slice(1) : [q]), q);
    if (typeof stop === "function") stopView = stop;
  } catch (e) {
    main.append(h("p", { class: "error", role: "alert" }, e.message));
  }
  main.focus();
}

async function whoami() {
  const who = document.getElementById("who");
  if (!token()) { who.replaceChildren(); return; }
  try {
    const me = await get("/whoami");
    who.replaceChildren(`${me.name} (${me.role}) `, h("button", { id: "signout", onclick: () => { setToken(null); location.hash = "#/signin"; whoami(); } }, "Sign out"));
  } catch (_) { who.replaceChildren(); }
}

window.addEventListener("hashchange", () => { clearFlash(); route(); whoami(); });
route();
whoami();
