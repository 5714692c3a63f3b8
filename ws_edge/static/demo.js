// The demo page's script: wires a CtxMeter client to the DOM of index.html (ids documented there).
import { CtxMeter, SESSION_ID_PATTERN } from "./ctxmeter.js";
import { TIMELINE_LIMIT, Timeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);
const numbers = new Intl.NumberFormat();

/** Display hints for the limit before the first count; the edge's reply (TokenUsage.max) is the truth. */
const MODEL_LIMITS = {
  "gpt-4o": 128_000,
  "gpt-4.1": 1_047_576,
  "gpt-5": 400_000,
  o3: 200_000,
  "gpt-4": 8_192,
  "claude-sonnet-4": 200_000,
  "gemini-2.5-pro": 1_048_576,
};

const LEVEL_WORDS = {
  normal: "Plenty of room left in the context window.",
  warning: "Warning: the context window is filling up.",
  critical: "Critical: the context window is nearly full. Compress or start a new session.",
};

/** The CtxMeter of this page (null when the session id is invalid). */
let client = null;

const el = {
  status: $("status"),
  statusText: $("status-text"),
  alert: $("alert"),
  alertText: $("alert-text"),
  retry: $("retry"),
  ring: $("context-ring"),
  arc: $("context-arc"),
  percent: $("context-percent"),
  used: $("context-used"),
  total: $("context-total"),
  level: $("context-level"),
  stale: $("context-stale"),
  threshold: $("context-threshold"),
  policy: $("context-policy"),
  left: $("context-left"),
  leftNumber: $("context-left-number"),
  compactAt: $("context-compact-at"),
  reserved: $("context-reserved"),
  estimated: $("context-estimated"),
  compactions: $("context-compactions"),
  reasoning: $("context-reasoning"),
  window: $("context-window"),
  draftAfter: $("draft-after"),
  timeline: $("timeline"),
  timelineSummary: $("timeline-summary"),
  timelineTable: $("timeline-table"),
  timelineEmpty: $("timeline-empty"),
  model: $("model"),
  draft: $("draft"),
  draftCount: $("draft-count"),
  draftMax: $("draft-max"),
  draftEncoding: $("draft-encoding"),
  draftBar: $("draft-bar"),
  draftFill: document.querySelector("#draft-bar .bar-fill"),
  draftState: $("draft-state"),
  sessionId: $("session-id"),
  curl: $("curl"),
  copy: $("copy-curl"),
  copyNote: $("copy-note"),
};

/** "79%", "79.5%", "<0.1%"; floored so a value just under a threshold never reads as the threshold. */
function percentText(percentage) {
  if (percentage > 0 && percentage < 0.1) return "<0.1%";
  const floored = Math.floor(percentage * 10) / 10;
  return `${Number.isInteger(floored) ? floored : floored.toFixed(1)}%`;
}

function levelOf(usage, warningAt, criticalAt) {
  if (usage.level === "normal" || usage.level === "warning" || usage.level === "critical") return usage.level;
  if (usage.percentage >= criticalAt) return "critical";
  return usage.percentage >= warningAt ? "warning" : "normal";
}

function clampPercent(value) {
  return Math.min(100, Math.max(0, Number(value) || 0));
}

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

function renderContext(usage) {
  const percentage = clampPercent(usage.percentage);
  const level = levelOf(usage, 80, 90);
  const shown = percentText(percentage);
  const policy = hasPolicy(usage);
  const compactAt = compactAtOf(usage);
  const left = Number.isInteger(usage.left) ? usage.left : Math.max(0, compactAt - usage.used);
  el.ring.dataset.level = level;
  el.ring.dataset.revision = String(usage.revision ?? "");
  el.ring.dataset.empty = String(usage.used === 0);
  el.ring.setAttribute("aria-valuenow", String(percentage));
  const words = [`${shown} used: ${numbers.format(usage.used)} of ${numbers.format(usage.total)} tokens (${level})`];
  if (usage.estimated) words.push("estimated");
  if (policy) words.push(`${numbers.format(left)} tokens left before compaction`);
  el.ring.setAttribute("aria-valuetext", words.join(", "));
  el.arc.style.strokeDashoffset = String(100 - percentage);
  el.percent.textContent = shown;
  el.used.textContent = numbers.format(usage.used);
  el.total.textContent = numbers.format(usage.total);
  el.estimated.hidden = !usage.estimated;
  el.level.textContent = usage.model ? `${LEVEL_WORDS[level]} Model: ${usage.model}.` : LEVEL_WORDS[level];

  // Beside the ring: the room left before the agent compacts, and what is kept for the reply.
  el.policy.hidden = !policy;
  el.threshold.setAttribute("display", policy ? "inline" : "none");
  if (policy) {
    const at = clampPercent((100 * compactAt) / usage.total);
    el.threshold.style.strokeDashoffset = String(-(at - 0.5));
    el.leftNumber.textContent = numbers.format(left);
    el.left.dataset.left = String(left);
    el.left.dataset.level = left === 0 ? "critical" : level;
    el.compactAt.textContent = `Compacts at ${numbers.format(compactAt)} of ${numbers.format(usage.total)}`;
    el.reserved.hidden = !(usage.reserved > 0);
    el.reserved.textContent = `${numbers.format(usage.reserved ?? 0)} tokens reserved for the reply`;
  }
  const compactions = usage.compactions ?? 0;
  el.compactions.hidden = compactions === 0;
  if (compactions > 0) {
    const when = usage.compacted_at ? `, the last at ${new Date(usage.compacted_at).toLocaleTimeString()}` : "";
    const plural = compactions === 1 ? "" : "s";
    el.compactions.textContent = `${numbers.format(compactions)} compaction${plural} so far${when}.`;
  }
  // Reasoning of the last response: shown beside used, counted in it only when the model keeps it.
  const reasoning = usage.reasoning ?? 0;
  el.reasoning.hidden = reasoning === 0;
  el.reasoning.textContent = `${numbers.format(reasoning)} reasoning tokens in the last response, beside the context.`;
  // A window nobody stated is a guess: say so once there is something to measure against it.
  el.window.hidden = !(usage.window_source === "default" && usage.used > 0);
  el.window.textContent = `Default window of ${numbers.format(usage.total)} tokens: no known model was named.`;
  renderDraftAfter();
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

let draftPending = false;
let draftError = null;
let latestCount = null;

function renderDraftState() {
  const usage = client?.tokens;
  const state = el.draftState;
  state.dataset.pending = String(draftPending);
  if (draftPending) {
    state.dataset.level = usage ? levelOf(usage, 80, 95) : "normal";
    state.textContent = "Calculating…";
  } else if (draftError) {
    state.dataset.level = "error";
    state.textContent = `Could not count the draft: ${draftError.message}`;
  } else if (usage && usage.count > 0) {
    const level = levelOf(usage, 80, 95);
    const limit = `${numbers.format(usage.max)}-token limit${usage.model ? ` of ${usage.model}` : ""}`;
    state.dataset.level = level;
    state.textContent = {
      normal: `${percentText(usage.percentage)} of the ${limit}.`,
      warning: `Warning: ${percentText(usage.percentage)} of the ${limit}.`,
      critical: `Critical: ${percentText(usage.percentage)} of the ${limit}. Shorten the message.`,
    }[level];
  } else {
    state.dataset.level = "normal";
    state.textContent = "";
  }
}

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

function renderTokens(usage) {
  const percentage = clampPercent(usage.percentage);
  const level = levelOf(usage, 80, 95);
  el.draftCount.textContent = numbers.format(usage.count);
  el.draftMax.textContent = numbers.format(usage.max);
  el.draftEncoding.textContent = usage.exact ? `· ${usage.encoding}` : `· estimate (${usage.encoding})`;
  el.draftBar.dataset.level = level;
  el.draftBar.setAttribute("aria-valuenow", String(percentage));
  el.draftBar.setAttribute("aria-valuetext", `${numbers.format(usage.count)} of ${numbers.format(usage.max)} tokens`);
  el.draftFill.style.width = `${percentage}%`;
  renderDraftState();
  renderDraftAfter();
}

function requestCount({ immediate = false } = {}) {
  draftPending = true;
  draftError = null;
  renderDraftState();
  const count = client.countDraft(el.draft.value, { model: el.model.value, immediate });
  latestCount = count;
  count.then(
    () => {
      if (count !== latestCount) return;
      draftPending = false;
      renderDraftState();
    },
    (error) => {
      if (count !== latestCount) return;
      draftPending = false;
      draftError = error;
      renderDraftState();
    },
  );
}

el.draftMax.textContent = numbers.format(MODEL_LIMITS[el.model.value]);
el.draft.addEventListener("input", () => {
  renderDraftAfter();
  requestCount();
});
el.model.addEventListener("change", () => {
  if (!client?.tokens) el.draftMax.textContent = numbers.format(MODEL_LIMITS[el.model.value]);
  requestCount({ immediate: true });
});

// -- connection status -----------------------------------------------------------------------

function statusText(status) {
  switch (status.state) {
    case "connecting":
      return status.attempt ? `Reconnecting… (attempt ${status.attempt})` : "Connecting…";
    case "open":
      return "Live";
    case "reconnecting":
      return `Reconnecting in ${(status.delayMs / 1000).toFixed(1)} s (attempt ${status.attempt})`;
    case "auth_failed":
      return status.httpStatus === 403 ? "Not allowed for this session" : "Not authorized";
    case "closed":
      return status.reason === "gave_up" ? `Disconnected after ${status.attempt} attempts` : "Disconnected";
    default:
      return "Starting…";
  }
}

let everOpen = false;

function renderStatus(status) {
  if (status.state === "open") {
    // After a reconnect the timeline may have missed changes: read it again after the first frame.
    if (everOpen) gapPending = true;
    everOpen = true;
  }
  el.status.dataset.state = status.state;
  // Until the socket is open again, the figures are the last known ones: say so.
  const live = status.state === "open";
  el.stale.hidden = live || client?.context == null;
  el.ring.dataset.live = String(live);
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

/** The edge's model registry: exact context windows for the hints, and the models the list lacks. */
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
    if (Number.isInteger(model.context_window)) MODEL_LIMITS[model.name] = model.context_window;
    if (known.has(model.name)) continue;
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = model.exact ? model.name : `${model.name} (estimate)`;
    more.append(option);
  }
  if (more.children.length > 0) el.model.append(more);
  if (!client.tokens) el.draftMax.textContent = numbers.format(MODEL_LIMITS[el.model.value]);
}

// -- start -----------------------------------------------------------------------------------

if (!SESSION_ID_PATTERN.test(sessionId)) {
  renderStatus({ state: "closed", reason: "invalid_session_id", message: "invalid session id" });
  showAlert("The session id must be 1–128 characters of A-Z a-z 0-9 _ -. Remove ?session= to get a fresh one.");
  el.draft.disabled = true;
  el.model.disabled = true;
  el.timelineSummary.textContent = "";
} else {
  client = new CtxMeter({ sessionId, token });
  client.on("status", renderStatus);
  client.on("context", renderContext);
  client.on("context", followTimeline);
  client.on("tokens", renderTokens);
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
