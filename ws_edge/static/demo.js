// The demo page's script: the meters are <ctxmeter-context> and <ctxmeter-draft> (ctxmeter-elements.js);
// this wires the rest of index.html (status pill, timeline, "after sending", curl line) to their shared client.
import { SESSION_ID_PATTERN } from "./ctxmeter.js";
import { statusText } from "./ctxmeter-elements.js";
import { TIMELINE_LIMIT, Timeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);
const numbers = new Intl.NumberFormat();

/** The CtxMeter of this page (null when the session id is invalid). */
let client = null;

const el = {
  status: $("status"),
  statusText: $("status-text"),
  alert: $("alert"),
  alertText: $("alert-text"),
  retry: $("retry"),
  meter: $("context-meter"),
  draftMeter: $("draft-meter"),
  draftAfter: $("draft-after"),
  timeline: $("timeline"),
  timelineSummary: $("timeline-summary"),
  timelineTable: $("timeline-table"),
  timelineEmpty: $("timeline-empty"),
  model: $("model"),
  draft: $("draft"),
  sessionId: $("session-id"),
  curl: $("curl"),
  copy: $("copy-curl"),
  copyNote: $("copy-note"),
};

function showAlert(message, { retry = false } = {}) {
  el.alertText.textContent = message;
  el.retry.hidden = !retry;
  el.alert.hidden = false;
}

function hideAlert() {
  el.alert.hidden = true;
}

// -- session and token from the page URL ---------------------------------------------------

const params = new URLSearchParams(location.search);
let sessionId = params.get("session");
if (sessionId === null || sessionId === "") {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  sessionId = `demo-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  params.set("session", sessionId);
  history.replaceState(null, "", `${location.pathname}?${params}`);
}
const token = params.get("token") || undefined;
el.sessionId.textContent = sessionId;

// -- the curl line -------------------------------------------------------------------------

function curlLine() {
  const lines = [`curl -X POST ${location.origin}/api/counters/context/${encodeURIComponent(sessionId)}`];
  if (token) lines.push(`-H "Authorization: Bearer $CTXMETER_TOKEN"`);
  lines.push(`-H 'Content-Type: application/json'`, `-d '{"used": 96000, "total": 128000}'`);
  return lines.join(" \\\n  ");
}

el.curl.textContent = curlLine();
el.copy.addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(el.curl.textContent);
    el.copyNote.textContent = "Copied to the clipboard.";
  } catch {
    // No clipboard access (plain http on another host): select the text for a manual copy.
    const range = document.createRange();
    range.selectNodeContents(el.curl);
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    el.copyNote.textContent = "Selected: press Ctrl+C (⌘C on a Mac) to copy.";
  }
});

// -- context ring ----------------------------------------------------------------------------

/** The point at which the agent compacts (the window when the edge predates compaction policies). */
function compactAtOf(usage) {
  return Number.isInteger(usage.compact_at) && usage.compact_at > 0 ? usage.compact_at : usage.total;
}

/** A compaction policy is set: tokens reserved for the reply, or a compaction point below the window. */
function hasPolicy(usage) {
  return (usage.reserved ?? 0) > 0 || compactAtOf(usage) < usage.total;
}

// -- timeline --------------------------------------------------------------------------------

const timeline = new Timeline(el.timeline, {
  summary: el.timelineSummary,
  table: el.timelineTable,
  empty: el.timelineEmpty,
});
/** Frames closer together than this may have been coalesced by the edge: read the history again after. */
const BURST_MS = 250;
const RELOAD_AFTER_MS = 1_000;
let lastFrameAt = -Infinity;
let reloadTimer = null;
let loading = null;
let loadAgain = false;
let gapPending = false;

async function loadHistory({ replace = false } = {}) {
  if (loading) {
    loadAgain = true;
    return;
  }
  clearTimeout(reloadTimer);
  reloadTimer = null;
  loading = client.history({ limit: TIMELINE_LIMIT });
  try {
    timeline.load(await loading, { replace });
  } catch (error) {
    el.timelineSummary.textContent = `History unavailable: ${error.message}`;
  } finally {
    loading = null;
    if (loadAgain) {
      loadAgain = false;
      loadHistory();
    }
  }
}

function reloadSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => loadHistory(), RELOAD_AFTER_MS);
}

function followTimeline(usage) {
  const now = performance.now();
  const burst = now - lastFrameAt < BURST_MS;
  lastFrameAt = now;
  const result = timeline.push(usage);
  if (result === "behind") {
    loadHistory({ replace: true }); // the revisions went back: what the timeline shows was not the session's
  } else if (burst || gapPending) {
    reloadSoon(); // changes may have been coalesced, or made while the page was not connected
  }
  gapPending = false;
}

// -- draft counter ---------------------------------------------------------------------------

/** What sending the draft would do: the context's used plus the draft, against the compaction point. */
function renderDraftAfter() {
  const context = client?.context;
  const draft = client?.tokens;
  const show = context != null && draft != null && draft.count > 0 && el.draft.value !== "";
  el.draftAfter.hidden = !show;
  if (!show) return;
  const after = context.used + draft.count;
  const compactAt = compactAtOf(context);
  const policy = hasPolicy(context);
  const share = after / compactAt;
  const level = share >= 0.9 ? "critical" : share >= 0.8 ? "warning" : "normal";
  const limit = policy
    ? `${numbers.format(compactAt)} before compaction`
    : `the ${numbers.format(compactAt)}-token window`;
  el.draftAfter.dataset.level = level;
  el.draftAfter.dataset.after = String(after);
  el.draftAfter.textContent =
    after > compactAt
      ? `After sending: ${numbers.format(after)}, ${numbers.format(after - compactAt)} over ${
          policy ? `the compaction point (${numbers.format(compactAt)}): the agent compacts first` : limit
        }.`
      : `After sending: ${numbers.format(after)} of ${limit}.`;
}

el.draft.addEventListener("input", renderDraftAfter);
el.model.addEventListener("change", () => el.draftMeter.setAttribute("model", el.model.value));

// -- connection status -----------------------------------------------------------------------

let everOpen = false;

function renderStatus(status) {
  if (status.state === "open") {
    // After a reconnect the timeline may have missed changes: read it again after the first frame.
    if (everOpen) gapPending = true;
    everOpen = true;
  }
  el.status.dataset.state = status.state;
  if (status.attempt) el.status.dataset.attempt = String(status.attempt);
  else delete el.status.dataset.attempt;
  el.statusText.textContent = statusText(status);
  if (status.state === "auth_failed") {
    const why =
      status.httpStatus === 403
        ? `Access denied (HTTP 403): ${status.message}.`
        : `Not authorized (HTTP 401): ${status.message}.`;
    showAlert(`${why} Open this page with ?token=<a JWT whose "sessions" claim lists this session>.`, { retry: true });
  } else if (status.state === "closed" && status.reason !== "client") {
    showAlert(`Disconnected: ${status.message ?? status.reason}.`, { retry: true });
  } else if (status.state === "open") {
    hideAlert();
  }
}

// -- models --------------------------------------------------------------------------------------

/** The edge's model registry: the models the list lacks. */
async function loadModels() {
  let reply;
  try {
    reply = await client.models();
  } catch {
    return; // the built-in list stays
  }
  const known = new Set(Array.from(el.model.options, (option) => option.value));
  const more = document.createElement("optgroup");
  more.label = "More models";
  for (const model of reply?.models ?? []) {
    if (typeof model?.name !== "string") continue;
    if (known.has(model.name)) continue;
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = model.exact ? model.name : `${model.name} (estimate)`;
    more.append(option);
  }
  if (more.children.length > 0) el.model.append(more);
}

// -- start -----------------------------------------------------------------------------------

if (!SESSION_ID_PATTERN.test(sessionId)) {
  renderStatus({ state: "closed", reason: "invalid_session_id", message: "invalid session id" });
  showAlert("The session id must be 1–128 characters of A-Z a-z 0-9 _ -. Remove ?session= to get a fresh one.");
  el.draft.disabled = true;
  el.model.disabled = true;
  el.timelineSummary.textContent = "";
} else {
  // getToken before the session: the elements' shared client is made with it.
  if (token) {
    el.meter.getToken = () => token;
    el.draftMeter.getToken = () => token;
  }
  el.meter.sessionId = sessionId;
  el.draftMeter.sessionId = sessionId;
  client = el.meter.client;
  client.on("status", renderStatus);
  client.on("context", renderDraftAfter);
  client.on("context", followTimeline);
  client.on("tokens", renderDraftAfter);
  renderStatus(client.status);
  loadHistory();
  loadModels();
  el.retry.addEventListener("click", () => {
    hideAlert();
    client.connect();
  });
  // Leave the back/forward cache usable: no open socket while the page is hidden in it.
  addEventListener("pagehide", (event) => {
    if (event.persisted) client.close();
  });
  addEventListener("pageshow", (event) => {
    if (event.persisted) client.connect();
  });
  window.ctxmeterDemo = { client, sessionId, timeline };
}
