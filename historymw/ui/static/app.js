// historymw viewer: live updates for the calls list. Polls at a bounded rate (not faster than
// data-interval, paused while the tab is hidden, backing off on errors); rows arrive as HTML the
// server rendered and escaped. Nothing recorded is ever evaluated here.
"use strict";
(function () {
  const body = document.getElementById("rows");
  if (!body || !body.dataset.liveUrl) return;
  const status = document.getElementById("live-status");
  const base = Math.max(parseInt(body.dataset.interval, 10) || 2000, 1000);
  const maxRows = 500;
  let newest = body.dataset.newest || "";
  let delay = base;
  let timer = null;

  function url() {
    const u = new URL(body.dataset.liveUrl, window.location.href);
    if (newest) u.searchParams.set("after", newest);
    return u.toString();
  }

  async function poll() {
    timer = null;
    if (document.hidden) return;
    try {
      const r = await fetch(url(), { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (!r.ok) throw new Error(String(r.status));
      const html = await r.text();
      const next = r.headers.get("X-Newest");
      if (next && html.trim()) {
        const t = document.createElement("template");
        t.innerHTML = html;  // server-escaped markup; <template> content is inert
        body.prepend(t.content);
        newest = next;
        while (body.rows.length > maxRows) body.deleteRow(-1);
        const empty = document.getElementById("empty");
        if (empty) empty.remove();
      }
      delay = base;
      if (status) { status.classList.remove("paused"); status.textContent = "live"; }
    } catch (e) {
      delay = Math.min(delay * 2, 30000);
      if (status) { status.classList.add("paused"); status.textContent = "reconnecting"; }
    }
    schedule();
  }

  function schedule() {
    if (timer === null && !document.hidden) timer = setTimeout(poll, delay);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) schedule();
  });
  schedule();
})();
