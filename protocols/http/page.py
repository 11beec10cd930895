"""The web page: one HTML document, its CSS and script inline, allowed by hash in its
Content-Security-Policy (CSP Level 3 8.3: hash-source), nothing else may run.

The page has no server-side data in it: the script fetches the JSON API and puts
message data into the document only through ``textContent`` and attribute setters
(never ``innerHTML``), so a caught message cannot inject markup.  A message's HTML
part is shown in ``<iframe sandbox>`` (no allow-scripts, no allow-same-origin: WHATWG
HTML 4.8.5) from /api/messages/{id}/html, itself served with a sandbox CSP.  Live
updates come from an ``EventSource`` on /api/events (WHATWG HTML 9.2).
"""

import base64
import hashlib

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{display:flex;gap:1em;align-items:center;padding:.6em 1em;background:#234;color:#fff}
header h1{font-size:18px;margin:0}
header input{flex:1;max-width:30em;padding:.3em}
#status{font-size:12px;opacity:.8}
main{display:flex;gap:1em;padding:1em}
#list-pane{flex:1;min-width:0}
#view{flex:1.2;min-width:0;background:#fff;border:1px solid #ccc;padding:.8em}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid #e4e4e4;vertical-align:top;overflow-wrap:anywhere}
#list td:nth-child(5),#list th:nth-child(5){white-space:nowrap;text-align:right}
#list tbody tr{cursor:pointer}
#list tbody tr:hover{background:#eef3fa}
#list tbody tr.selected{background:#dbe7f7}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f4f4f4;padding:.5em;max-height:30em;overflow:auto}
iframe{width:100%;height:24em;border:1px solid #ccc;background:#fff}
h2{font-size:16px;margin:.2em 0 .6em}
h3{font-size:14px;margin:1em 0 .3em}
button{cursor:pointer}
[hidden]{display:none!important}
"""

SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
const LIVE_DELAY_MS = 1000;
let current = null, pending = null;
function el(tag, text) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function status(text) { $("status").textContent = text; }
function api(path, opts) {
  return fetch(path, Object.assign({credentials: "same-origin"}, opts || {})).then((r) => {
    if (r.ok) return r;
    return r.json().then((j) => { throw new Error(j.error || r.statusText); },
                         () => { throw new Error(r.status + " " + r.statusText); });
  });
}
function size(n) {
  return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KB" : (n / 1048576).toFixed(1) + " MB";
}
function received(m) { return new Date(m.received * 1000).toLocaleString(); }
function msgPath(id) { return "/api/messages/" + encodeURIComponent(id); }
function row(cells) {
  const tr = el("tr");
  for (const c of cells) tr.append(el("td", c));
  return tr;
}
function loadList() {
  const q = $("search").value.trim();
  return api("/api/messages" + (q ? "?q=" + encodeURIComponent(q) : "")).then((r) => r.json()).then((list) => {
    const rows = $("rows");
    rows.replaceChildren();
    for (const m of list) {
      const tr = row([m.header_from || m.mail_from || "<>", m.header_to || m.rcpt_to.join(", "),
                      m.subject || "(no subject)", m.date || received(m), size(m.size)]);
      tr.dataset.id = m.id;
      if (m.id === current) tr.className = "selected";
      tr.addEventListener("click", () => { location.hash = "#/message/" + encodeURIComponent(m.id); });
      rows.append(tr);
    }
    $("empty").hidden = list.length > 0;
    $("count").textContent = list.length + (list.length === 1 ? " message" : " messages");
    document.body.dataset.loaded = String(list.length);
  }).catch((e) => status(e.message));
}
function fillTable(table, pairs) {
  table.replaceChildren();
  for (const [k, v] of pairs) {
    const tr = el("tr");
    tr.append(el("th", k), el("td", v));
    table.append(tr);
  }
}
function showAttachments(m) {
  const ul = $("v-attachments");
  ul.replaceChildren();
  for (const a of m.attachments) {
    const li = el("li"), link = el("a", a.filename || a.safe_filename);
    link.href = msgPath(m.id) + "/attachments/" + a.index;
    link.download = a.safe_filename;
    li.append(link, el("span", " " + a.type + ", " + size(a.size)));
    ul.append(li);
  }
  $("v-attachments-h").hidden = m.attachments.length === 0;
}
function show(id) {
  current = id;
  return api(msgPath(id)).then((r) => r.json()).then((m) => {
    $("view").hidden = false;
    $("v-subject").textContent = m.subject || "(no subject)";
    fillTable($("v-envelope"), [["Mailbox", m.mailbox], ["MAIL FROM", m.mail_from || "<>"],
      ["RCPT TO", m.rcpt_to.join(", ")], ["Received", received(m)], ["Size", size(m.size)],
      ["Client", m.peer_ip + (m.helo ? " (HELO " + m.helo + ")" : "")], ["Listener", m.listener],
      ["TLS", m.tls ? "yes" : "no"], ["AUTH", m.auth_user || "none"]]);
    fillTable($("v-headers"), m.headers);
    $("v-text").textContent = m.text === null ? "(no text part)" : m.text;
    const frame = $("v-html");
    frame.hidden = !m.has_html;
    $("v-html-h").hidden = !m.has_html;
    if (m.has_html) frame.src = msgPath(id) + "/html"; else frame.removeAttribute("src");
    showAttachments(m);
    $("v-raw-link").href = msgPath(id) + "/raw";
    for (const tr of $("rows").children) tr.className = tr.dataset.id === id ? "selected" : "";
    return api(msgPath(id) + "/raw").then((r) => r.text()).then((t) => { $("v-raw").textContent = t; });
  }).catch((e) => { status(e.message); $("view").hidden = true; });
}
function route() {
  const m = location.hash.match(/^#\\/message\\/(.+)$/);
  if (m) return show(decodeURIComponent(m[1]));
  current = null;
  $("view").hidden = true;
  return Promise.resolve();
}
function later() {
  if (pending) clearTimeout(pending);
  pending = setTimeout(() => { pending = null; loadList(); }, 100);
}
$("search").addEventListener("input", later);
$("v-delete").addEventListener("click", () => {
  api(msgPath(current), {method: "DELETE"}).then(() => { location.hash = ""; loadList(); })
    .catch((e) => status(e.message));
});
$("delete-all").addEventListener("click", () => {
  if (!confirm("Delete every message?")) return;
  api("/api/messages", {method: "DELETE"}).then(() => { location.hash = ""; loadList(); })
    .catch((e) => status(e.message));
});
window.addEventListener("hashchange", route);
function live() {
  const events = new EventSource("/api/events");
  events.addEventListener("message", later);
  events.addEventListener("open", () => { status("live"); later(); });
  events.addEventListener("error", () => status("live updates paused, retrying"));
}
// The stream opens a moment after the first list (the reload on "open" covers the gap):
// a headless browser's --virtual-time-budget runs out before it, since it waits
// for open requests and an event stream never ends (tests/test_interop_http.py).
loadList().then(route).then(() => setTimeout(live, LIVE_DELAY_MS));
"""

BODY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mailsrv: caught mail</title>
<style>%s</style></head>
<body>
<header><h1>mailsrv</h1>
<input id="search" type="search" placeholder="Search from, to, subject" aria-label="Search">
<span id="count"></span><button id="delete-all" type="button">Delete all</button>
<span id="status"></span></header>
<main>
<section id="list-pane">
<table id="list"><thead><tr><th>From</th><th>To</th><th>Subject</th><th>Date</th><th>Size</th></tr></thead>
<tbody id="rows"></tbody></table>
<p id="empty">No messages caught yet.</p>
</section>
<section id="view" hidden>
<h2 id="v-subject"></h2>
<p><button id="v-delete" type="button">Delete</button> <a id="v-raw-link">Download raw source</a></p>
<h3>Envelope and transcript</h3><table id="v-envelope"></table>
<h3 id="v-attachments-h">Attachments</h3><ul id="v-attachments"></ul>
<h3>Text part</h3><pre id="v-text"></pre>
<h3 id="v-html-h">HTML part (sandboxed: no scripts, no remote content)</h3>
<iframe id="v-html" sandbox referrerpolicy="no-referrer" title="HTML part"></iframe>
<h3>Header fields</h3><table id="v-headers"></table>
<h3>Raw source</h3><pre id="v-raw"></pre>
</section>
</main>
<script>%s</script>
</body></html>
"""


def _hash(text: str) -> str:
    """CSP hash-source of an inline element's text (CSP Level 3 8.3)."""
    return "'sha256-%s'" % base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


PAGE = (BODY % (STYLE, SCRIPT)).encode("utf-8")
# Only our inline script and style; fetches and frames only from ourselves; no
# plugins, no <base>, no forms, and no other site may frame the page.
CSP = ("default-src 'none'; script-src %s; style-src %s; connect-src 'self'; img-src 'self' data:; "
       "frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
       % (_hash(SCRIPT), _hash(STYLE)))
