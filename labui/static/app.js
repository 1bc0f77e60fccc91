// mosemu lab console. Device data is shown with textContent only: file
// names, console lines and RPC methods come from whoever talks to the device.
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const dev = params.get("dev") || "";
const q = dev ? "?dev=" + encodeURIComponent(dev) : "";
let consoleLines = [];
const sources = new Set();
let state = null;
window.addEventListener("error", (e) => status("page error: " + e.message, true));

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}
function hex(n) { return "0x" + Number(n).toString(16); }
function status(msg, bad) { const s = $("status"); s.textContent = msg; s.className = bad ? "bad" : ""; }

async function act(action, name) {
  status(action + "…");
  try {
    const r = await fetch("api/action" + q, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ action, name }) });
    const j = await r.json();
    if (!r.ok) { status(action + ": " + (j.error || r.status), true); return; }
    status(action + ": done");
    if (action === "check" && j.result) showGoals(j.result);
  } catch (e) { status(action + ": " + e, true); }
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-action]");
  if (!b) return;
  const a = b.dataset.action;
  if (a === "snapshot" || a === "restore") act(a, $("snapname").value.trim());
  else if (a === "restore-named") act("restore", b.dataset.name);
  else act(a);
});

// Console
const levelRank = { error: 0, warn: 1, info: 2, debug: 3, verbose: 4, "": 2 };
function srcOf(line) { return line.slice(0, 24).trim().split(":")[0]; }
function lineVisible(c) {
  const line = c.line;
  const f = $("con-filter").value.toLowerCase();
  const s = $("con-src").value;
  if (f && !line.toLowerCase().includes(f)) return false;
  if (s && srcOf(line) !== s) return false;
  if ($("con-findings").checked && !line.includes("finding=")) return false;
  if (levelRank[c.level || ""] > +$("con-level").value) return false;
  return true;
}
function consoleNode(c) {
  const cls = c.line.includes("finding=") ? "finding" : (c.level === "error" ? "err" : c.level === "warn" ? "warn" : "");
  const n = el("span", c.line + "\n", cls);
  if (c.level) n.dataset.level = c.level;
  return n;
}
function addConsole(line, level) {
  const c = { line, level: level || "" };
  consoleLines.push(c);
  if (consoleLines.length > 2000) consoleLines = consoleLines.slice(-1500);
  const s = srcOf(line);
  if (s && !sources.has(s)) {
    sources.add(s);
    const o = el("option", s); o.value = s; $("con-src").appendChild(o);
  }
  if (lineVisible(c)) {
    const pre = $("console");
    pre.appendChild(consoleNode(c));
    while (pre.childNodes.length > 1500) pre.removeChild(pre.firstChild);
    if ($("con-follow").checked) pre.scrollTop = pre.scrollHeight;
  }
}
function redrawConsole() {
  const c = $("console");
  c.replaceChildren(...consoleLines.filter(lineVisible).map(consoleNode));
  c.scrollTop = c.scrollHeight;
}
for (const id of ["con-filter", "con-src", "con-findings", "con-level"]) $(id).addEventListener("input", redrawConsole);

// RPC trace
function addRPC(m) {
  const c = m.call;
  const denied = c.code === 401 || c.code === 403;
  const result = c.code === 0 ? "ok" : String(c.code);
  const tr = row([new Date(m.time).toLocaleTimeString(), c.channel, c.peer, c.method, c.auth, result, c.latency_ms.toFixed(1) + " ms"], denied ? "denied" : "");
  tr.dataset.method = c.method;
  tr.dataset.auth = c.auth;
  const tb = $("rpc").tBodies[0];
  tb.insertBefore(tr, tb.firstChild);
  while (tb.rows.length > 300) tb.deleteRow(-1);
}

function addEvent(m) {
  const li = el("li", new Date(m.time).toLocaleTimeString() + "  " + m.line);
  const ul = $("events");
  ul.insertBefore(li, ul.firstChild);
  while (ul.children.length > 100) ul.removeChild(ul.lastChild);
}

// State
function showState(s) {
  state = s;
  const d = s.device;
  $("devinfo").textContent = `${d.id || "(not running)"} · ${d.arch} · HTTP ${d.http_addr}` + (d.serial ? ` · serial ${d.serial}` : "") +
    (d.downloading ? " · DOWNLOAD MODE" : d.running ? " · running" : " · halted") + (d.boot_error ? " · " + d.boot_error : "");
  document.body.dataset.running = d.running; document.body.dataset.downloading = d.downloading;
  $("btn-download").disabled = !d.serial || d.downloading;
  $("btn-release").disabled = !d.downloading;
  if (s.lab) { $("labname").textContent = s.lab; $("goals-panel").hidden = false; }
  showFlash(s.flash);
  showEfuses(s.efuses);
  const ram = s.ram;
  $("ram-meter").max = ram.total || 1; $("ram-meter").value = ram.free;
  $("ram-text").textContent = `${(ram.free / 1024).toFixed(1)} KiB free of ${(ram.total / 1024).toFixed(0)} KiB (min ${(ram.min_free / 1024).toFixed(1)} KiB); ${ram.conns} ${ram.tls ? "TLS" : "TCP"} connection${ram.conns === 1 ? "" : "s"} to the device's server`;
  $("files").replaceChildren(...(s.files || []).map((f) => el("li", f.path + (f.is_dir ? "/" : `  ${f.size} B`))));
  showConfig();
  showATCA(s.atca);
  $("snapshots").replaceChildren(...s.snapshots.map((sn) => {
    const li = el("li", `${sn.name}  ${new Date(sn.created).toLocaleString()} `);
    const b = el("button", "restore " + sn.name); b.dataset.action = "restore-named"; b.dataset.name = sn.name;
    li.appendChild(b); return li;
  }));
}

function showFlash(f) {
  const map = $("flashmap");
  const secrets = (f.secrets || []).filter((s) => !s.public);
  const secretSectors = new Set(secrets.map((s) => s.sector));
  const starts = new Map((f.partitions || []).map((p) => [p.offset / f.sector_size, p.label]));
  if (map.children.length !== f.map.length) {
    map.replaceChildren(...Array.from(f.map, () => el("span", null, "cell")));
  }
  for (let i = 0; i < f.map.length; i++) {
    const c = map.children[i];
    const k = secretSectors.has(i) ? "s" : f.map[i];
    const cls = "cell " + k + (starts.has(i) ? " part-start" : "");
    if (c.className !== cls) c.className = cls;
    c.dataset.sector = i; c.dataset.kind = f.map[i];
    c.title = `${hex(i * f.sector_size)}: ${{ e: "erased", p: "plaintext", c: "ciphertext" }[f.map[i]]}` + (secretSectors.has(i) ? ", plaintext secret" : "") + (starts.has(i) ? ` (start of ${starts.get(i)})` : "");
  }
  $("parts").tBodies[0].replaceChildren(...(f.partitions || []).map((p) => {
    const a = p.offset / f.sector_size, b = a + p.size / f.sector_size;
    const n = { e: 0, p: 0, c: 0 };
    for (let i = a; i < b && i < f.map.length; i++) n[f.map[i]]++;
    const tr = row([p.label, p.type, hex(p.offset), hex(p.size), p.encrypted ? "yes" : "no", `${n.e} / ${n.p} / ${n.c}`]);
    tr.dataset.label = p.label; tr.dataset.plain = n.p; tr.dataset.cipher = n.c;
    return tr;
  }));
  $("secrets").replaceChildren(...secrets.map((s) => el("li", `${hex(s.offset)} (${s.partition || "no partition"}): ${s.kind}`)));
  if (!secrets.length) $("secrets").appendChild(el("li", "none found", "ok"));
  const pub = (f.secrets || []).filter((s) => s.public);
  $("public").replaceChildren(...pub.map((s) => el("li", `${hex(s.offset)} (${s.partition || "no partition"}): ${s.kind}`)));
}

function prot(o) { return [o.write_protected ? "write-protected" : "", o.read_protected ? "read-protected" : ""].filter(Boolean).join(", ") || "—"; }
function showEfuses(e) {
  if (!e) { $("fe").textContent = "(no efuses on this chip)"; return; }
  $("fe").textContent = e.flash_encryption ? "flash encryption ON" : "flash encryption off";
  $("efuses").tBodies[0].replaceChildren(...e.fields.map((f) => {
    const tr = row([f.name, f.value, `${f.bits_set}/${f.width}`, prot(f)]);
    tr.dataset.field = f.name; return tr;
  }));
  $("blocks").tBodies[0].replaceChildren(...e.blocks.map((b) => {
    const tr = row([b.name, b.purpose, b.state, prot(b)], b.read_protected ? "" : "");
    tr.dataset.block = b.block; return tr;
  }));
}

function showConfig() {
  if (!state) return;
  const f = $("cfg-filter").value.toLowerCase();
  const changed = $("cfg-changed").checked;
  const rows = (state.config || []).filter((c) => (!f || c.key.toLowerCase().includes(f)) && (!changed || c.level > 0));
  $("config").tBodies[0].replaceChildren(...rows.map((c) => row([c.key, c.value, c.level === 0 ? "default" : "conf" + c.level])));
}
$("cfg-filter").addEventListener("input", showConfig);
$("cfg-changed").addEventListener("input", showConfig);

function showATCA(a) {
  $("atca-locks").textContent = `config zone ${a.config_locked ? "locked" : "UNLOCKED"}, data zone ${a.data_locked ? "locked" : "UNLOCKED"}`;
  $("atca").tBodies[0].replaceChildren(...(a.slots || []).map((s) => row([s.slot, s.key_type, s.slot_config, s.key_config,
    [s.private ? "private key" : "", s.secret ? "secret" : "", s.locked ? "slot locked" : "", s.written ? "written" : "empty"].filter(Boolean).join(", ")])));
}

function showGoals(g) {
  const ol = $("goals");
  $("goals-panel").hidden = false;
  if (g.running) { status("checking goals…"); return; }
  if (g.error) { ol.replaceChildren(el("li", "check failed: " + g.error, "bad")); return; }
  const res = (g.results && g.results.goals) || [];
  ol.replaceChildren(...res.map((r) => {
    const li = el("li");
    li.appendChild(el("span", r.passed ? "✔ passed " : "✘ not yet ", r.passed ? "ok" : "bad"));
    li.appendChild(el("span", r.name));
    li.appendChild(el("span", r.evidence, "evidence"));
    li.dataset.passed = r.passed;
    return li;
  }));
  status(`goals checked ${new Date(g.checked).toLocaleTimeString()}: ${res.filter((r) => r.passed).length}/${res.length} passed`);
}

// Live connection
function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname.replace(/[^/]*$/, "") + "ws" + q);
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    switch (m.t) {
      case "hello":
        consoleLines = []; $("console").replaceChildren(); $("rpc").tBodies[0].replaceChildren(); $("events").replaceChildren();
        (m.console || []).forEach((c) => addConsole(c.line || "", c.level));
        (m.rpc || []).forEach(addRPC);
        (m.events || []).forEach(addEvent);
        document.body.dataset.connected = "true";
        break;
      case "console": addConsole(m.line || "", m.level); break;
      case "rpc": addRPC(m); break;
      case "event": addEvent(m); break;
      case "state": showState(m.state); break;
      case "goals": showGoals(m.goals); break;
    }
  };
  ws.onclose = () => { document.body.dataset.connected = "false"; status("disconnected; reconnecting…", true); setTimeout(connect, 1500); };
}

async function start() {
  const r = await fetch("api/devices");
  const devs = await r.json();
  if (!dev && devs.length > 1) {
    $("device").hidden = true; $("actions").hidden = true; $("devices").hidden = false;
    $("devinfo").textContent = `${devs.length} devices`;
    $("devlist").replaceChildren(...devs.map((d) => {
      const li = el("li"); const a = el("a", `${d.name} — ${d.id || "(not running)"} — ${d.http_addr}`);
      a.href = "?dev=" + encodeURIComponent(d.name); li.appendChild(a); return li;
    }));
    return;
  }
  connect();
}
start();
