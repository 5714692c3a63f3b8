// The sessions overview page: every live session, nearest to compaction first, updating live.
//
// It opens WS /api/ws/sessions first and then reads GET /api/counters/sessions?sort=left&limit=N, so no
// change falls between the two (a change the list already has is dropped by its revision). The page holds
// every session it has heard of; a session it has not heard of has not changed since the last read, so
// it has at least as many tokens left as the last one that read returned (the "cutoff"). While the shown
// rows all lie within that cutoff the order is exact; when changes push rows past it, or a session shown
// leaves, the page reads the list again.

const params = new URLSearchParams(location.search);
const token = params.get("token") || undefined;
const LIMIT_MAX = 1000;
const limit = Math.min(LIMIT_MAX, Math.max(1, Number.parseInt(params.get("limit") ?? "", 10) || 200));
/** Background re-read, for the total (changes carry no count of sessions). */
const REFRESH_MS = 30_000;
/** A burst of reasons to re-read makes one read. */
const REREAD_DEBOUNCE_MS = 250;
const RECONNECT = { baseMs: 500, capMs: 15_000 };

const $ = (id) => document.getElementById(id);
const numbers = new Intl.NumberFormat();
const el = {
  status: $("status"),
  statusText: $("status-text"),
  alert: $("alert"),
  alertText: $("alert-text"),
  summary: $("summary"),
  table: $("sessions"),
  body: $("sessions-body"),
  empty: $("empty"),
};

/** session id → {usage, read: the read generation that last vouched for it, or -1 when a frame did} */
const known = new Map();
const rows = new Map();
let cutoff = Infinity;
let total = 0;
let readGeneration = 0;
let reading = null;
let readAgain = false;
let rereadTimer = null;
let renderQueued = false;
let socket = null;
let attempt = 0;

function setStatus(state, text) {
  el.status.dataset.state = state;
  el.statusText.textContent = text;
}

function showAlert(message) {
  el.alertText.textContent = message;
  el.alert.hidden = false;
}

function headers() {
  return token ? { Accept: "application/json", Authorization: `Bearer ${token}` } : { Accept: "application/json" };
}

function byLeft(a, b) {
  return a.left - b.left || (a.session_id < b.session_id ? -1 : a.session_id > b.session_id ? 1 : 0);
}

function take(usage, read) {
  const held = known.get(usage.session_id);
  if (held && held.usage.revision > usage.revision) return;
  known.set(usage.session_id, { usage, read });
}

// -- the list -------------------------------------------------------------------------------------

async function readList() {
  if (reading) {
    readAgain = true;
    return;
  }
  clearTimeout(rereadTimer);
  rereadTimer = null;
  const generation = ++readGeneration;
  reading = (async () => {
    const url = new URL("/api/counters/sessions", location.href);
    url.searchParams.set("sort", "left");
    url.searchParams.set("limit", String(limit));
    const response = await fetch(url, { headers: headers(), cache: "no-store" });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw Object.assign(new Error(body?.error?.message ?? response.statusText), { status: response.status });
    }
    return response.json();
  })();
  try {
    const reply = await reading;
    // What this read says replaces what earlier reads said; what frames said since it began stays.
    for (const [sid, entry] of known) {
      if (entry.read !== -1 && entry.read < generation) known.delete(sid);
    }
    for (const usage of reply.sessions) take(usage, generation);
    total = reply.total;
    cutoff = reply.sessions.length < limit ? Infinity : reply.sessions[reply.sessions.length - 1].left;
    el.alert.hidden = true;
    queueRender();
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      setStatus("auth_failed", error.status === 403 ? "Not allowed" : "Not authorized");
      showAlert(
        `${error.status === 403 ? "Access denied" : "Not authorized"} (HTTP ${error.status}): ${error.message}. ` +
          'Open this page with ?token=<a JWT whose "sessions" claim is ["*"]>.',
      );
    } else {
      showAlert(`The sessions cannot be read right now: ${error.message}.`);
      rereadSoon(2_000);
    }
  } finally {
    reading = null;
    if (readAgain) {
      readAgain = false;
      readList();
    }
  }
}

function rereadSoon(delay = REREAD_DEBOUNCE_MS) {
  if (rereadTimer !== null) return;
  rereadTimer = setTimeout(() => {
    rereadTimer = null;
    readList();
  }, delay);
}

// -- the socket ------------------------------------------------------------------------------------

function connect() {
  const url = new URL("/api/ws/sessions", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  setStatus("connecting", attempt ? `Reconnecting… (attempt ${attempt})` : "Connecting…");
  const ws = new WebSocket(url);
  socket = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    attempt = 0;
    setStatus("open", "Live");
    // Changes made while no socket was open are lost: what frames said needs the next read's word.
    for (const entry of known.values()) if (entry.read === -1) entry.read = 0;
    readList(); // after the socket is open: no change falls in between
  };
  ws.onmessage = (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame?.type === "context_update" && frame.data?.session_id === frame.session_id) {
      take(frame.data, -1);
      queueRender();
    } else if (frame?.type === "session_removed" && known.delete(frame.session_id)) {
      total = Math.max(0, total - 1);
      if (cutoff !== Infinity) rereadSoon(); // a row beyond the cutoff may move up into its place
      queueRender();
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    socket = null;
    if (!opened) {
      // A refused upgrade does not say why: the list's read does (401, 403, 503).
      readList();
    }
    attempt += 1;
    const ceiling = Math.min(RECONNECT.capMs, RECONNECT.baseMs * 2 ** (attempt - 1));
    const delay = Math.floor(Math.random() * ceiling);
    setStatus("reconnecting", `Reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${attempt})`);
    setTimeout(() => {
      if (el.status.dataset.state !== "auth_failed") connect();
    }, delay);
  };
}

setInterval(() => {
  if (socket?.readyState === WebSocket.OPEN) socket.send('{"type":"ping"}');
}, 30_000);
setInterval(() => {
  if (socket?.readyState === WebSocket.OPEN) readList();
}, REFRESH_MS);

// -- rendering -------------------------------------------------------------------------------------

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function timeOf(at) {
  const date = new Date(at);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString();
}

function makeRow(sid) {
  const tr = document.createElement("tr");
  tr.dataset.sessionId = sid;
  const link = document.createElement("a");
  link.href = `/?session=${encodeURIComponent(sid)}${token ? `&token=${encodeURIComponent(token)}` : ""}`;
  link.textContent = sid;
  const cells = Array.from({ length: 6 }, () => document.createElement("td"));
  cells[0].append(link);
  cells[1].className = "left";
  const share = document.createElement("span");
  share.className = "share";
  const bar = document.createElement("span");
  bar.className = "mini-bar";
  bar.setAttribute("aria-hidden", "true");
  const fill = document.createElement("span");
  fill.className = "mini-fill";
  bar.append(fill);
  const percent = document.createElement("span");
  share.append(bar, percent);
  cells[3].append(share);
  tr.append(...cells);
  return { tr, cells, fill, percent, revision: null };
}

function fillRow(row, usage) {
  if (row.revision === usage.revision) return;
  row.revision = usage.revision;
  const { tr, cells } = row;
  tr.dataset.left = String(usage.left);
  tr.dataset.level = usage.level;
  tr.dataset.revision = String(usage.revision);
  cells[1].textContent = numbers.format(usage.left);
  cells[2].textContent = `${numbers.format(usage.used)} of ${numbers.format(usage.compact_at)}`;
  if (usage.estimated) {
    const badge = document.createElement("span");
    badge.className = "badge-estimated";
    badge.textContent = "est.";
    badge.title = "Includes add/free estimates since the provider's last usage report";
    cells[2].append(badge);
  }
  const share = Math.min(100, Math.max(0, usage.percentage));
  row.fill.style.width = `${share}%`;
  row.percent.textContent = `${share.toFixed(1)}%`;
  cells[4].textContent = usage.model ?? "–";
  cells[5].textContent = timeOf(usage.updated_at);
}

function render() {
  const ordered = Array.from(known.values(), (entry) => entry.usage).sort(byLeft);
  const shown = ordered.slice(0, limit);
  // Rows past the cutoff may be out of order with sessions this page has not heard of: read again.
  if (shown.length > 0 && shown[shown.length - 1].left > cutoff) rereadSoon();
  const keep = new Set(shown.map((usage) => usage.session_id));
  for (const [sid, row] of rows) {
    if (!keep.has(sid)) {
      row.tr.remove();
      rows.delete(sid);
    }
  }
  let previous = null;
  for (const usage of shown) {
    let row = rows.get(usage.session_id);
    if (!row) {
      row = makeRow(usage.session_id);
      rows.set(usage.session_id, row);
    }
    fillRow(row, usage);
    // Move only what is out of place (moving every row would restart every row's transitions).
    const expected = previous ? previous.nextSibling : el.body.firstChild;
    if (expected !== row.tr) el.body.insertBefore(row.tr, expected);
    previous = row.tr;
  }
  const count = Math.max(total, known.size);
  el.table.dataset.rows = String(shown.length);
  el.summary.dataset.total = String(count);
  el.summary.textContent =
    count === 0
      ? "No live session."
      : `${numbers.format(count)} live session${count === 1 ? "" : "s"}` +
        (count > shown.length ? ` · the ${numbers.format(shown.length)} nearest to compaction shown` : "");
  el.empty.hidden = shown.length > 0;
}

connect();
