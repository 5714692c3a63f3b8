/**
 * ctxmeter-elements.js — ctxmeter's meters as custom elements, for any page or framework (no build step).
 *
 *   <script type="module" src="/static/ctxmeter-elements.js"></script>
 *   <ctxmeter-context session-id="my-session"></ctxmeter-context>
 *   <textarea id="message"></textarea>
 *   <ctxmeter-draft session-id="my-session" for="message"></ctxmeter-draft>
 *
 * Both elements follow their session through ctxmeter.js; every element of one session (and edge) on a
 * page shares one client, so one socket. The client closes when the last of them leaves the page.
 *
 * <ctxmeter-context session-id url label>
 *   The context ring (used of total; blue < 80 %, orange 80–89 %, red ≥ 90 % by the edge's level), the
 *   tokens left before compaction and the reserve (beside the ring when a compaction policy is set), an
 *   "Estimated" mark and the connection status. The ring is role="meter": aria-valuemin 0,
 *   aria-valuemax = total, aria-valuenow = used, aria-valuetext in words.
 *   Properties: usage (the latest ContextUsage, or null), status, client (the shared CtxMeter), getToken.
 *   Event: "ctxmeter-context" (detail: ContextUsage) on every change; "ctxmeter-status" (detail: status).
 *   Host attributes for styling: level (normal|warning|critical), state (the connection state).
 *
 * <ctxmeter-draft session-id url for max-tokens debounce-ms model label>
 *   The token counter of a draft message: of the text box whose id is `for` (or of the `text` property),
 *   counted `debounce-ms` (300) after typing pauses, against `max-tokens` (default: the model's window).
 *   Progress bar, "Calculating…" while typing, a warning from 80 % and critical from 95 %. The bar is
 *   role="meter": aria-valuemax = the limit, aria-valuenow = the count.
 *   Properties: usage (the latest TokenUsage, or null), text, pending, status, client, getToken.
 *   Event: "ctxmeter-draft" (detail: TokenUsage). Host attributes: level, pending.
 *
 * `url` is the edge's base URL (default: the page's origin). With auth on, set `getToken` (a function
 * returning a JWT, or a promise of one) before or after the element is on the page.
 *
 * Styling: CSS custom properties (--ctxmeter-normal, --ctxmeter-warning, --ctxmeter-critical, their
 * --ctxmeter-*-text variants, --ctxmeter-track, --ctxmeter-muted, --ctxmeter-surface, --ctxmeter-ring-size)
 * and ::part() (context: ring, arc, track, threshold, percent, caption, policy, left, compact-at,
 * reserved, figures, used, total, estimated, level, compactions, reasoning, window, status, stale; draft: figures, count, max,
 * encoding, bar, fill, state).
 */

import { CtxMeter, SESSION_ID_PATTERN } from "./ctxmeter.js";

const numbers = new Intl.NumberFormat();

// -- one client per session and edge, shared by the page's elements ---------------------------------

/** key (socket URL without token) → {client, users: Set<element>, closing} */
const shared = new Map();

function clientKey(url, sessionId) {
  const root = new URL(url || "/", globalThis.location?.href);
  if (root.protocol === "ws:") root.protocol = "http:";
  if (root.protocol === "wss:") root.protocol = "https:";
  let path = root.pathname;
  if (!path.endsWith("/")) path += "/";
  return `${root.origin}${path}|${sessionId}`;
}

function makeClient(entry, url, sessionId) {
  const withToken = [...entry.users].some((user) => typeof user.getToken === "function");
  const getToken = withToken
    ? () => {
        const user = [...entry.users].find((candidate) => typeof candidate.getToken === "function");
        if (!user) throw new Error("no element of this session has a getToken");
        return user.getToken();
      }
    : undefined;
  return new CtxMeter({ sessionId, url: url || undefined, getToken });
}

function acquire(element, url, sessionId) {
  const key = clientKey(url, sessionId);
  let entry = shared.get(key);
  if (!entry) {
    entry = { key, url, sessionId, client: null, users: new Set(), closing: null };
    shared.set(key, entry);
  }
  clearTimeout(entry.closing);
  entry.closing = null;
  entry.users.add(element);
  entry.client ??= makeClient(entry, url, sessionId);
  return entry;
}

function release(entry, element) {
  entry.users.delete(element);
  if (entry.users.size > 0 || entry.closing !== null) return;
  // Later, not now: an element moved within the page leaves and comes back at once.
  entry.closing = setTimeout(() => {
    if (entry.users.size > 0) return;
    shared.delete(entry.key);
    entry.client.close();
  }, 0);
}

/** An element of the session got a getToken after the client started without one: start it again with it. */
function tokenArrived(entry) {
  const client = entry.client;
  if (client.options.getToken) {
    if (client.status.state === "auth_failed") client.connect();
    return;
  }
  client.close();
  entry.client = makeClient(entry, entry.url, entry.sessionId);
  for (const user of entry.users) user._rebind();
}

// -- shared pieces --------------------------------------------------------------------------------

/** "79%", "79.5%", "<0.1%"; floored so a value just under a threshold never reads as the threshold. */
export function percentText(percentage) {
  if (percentage > 0 && percentage < 0.1) return "<0.1%";
  const floored = Math.floor(percentage * 10) / 10;
  return `${Number.isInteger(floored) ? floored : floored.toFixed(1)}%`;
}

function clampPercent(value) {
  return Math.min(100, Math.max(0, Number(value) || 0));
}

function levelOf(usage, warningAt, criticalAt) {
  if (usage.level === "normal" || usage.level === "warning" || usage.level === "critical") return usage.level;
  if (usage.percentage >= criticalAt) return "critical";
  return usage.percentage >= warningAt ? "warning" : "normal";
}

/** A status in words. */
export function statusText(status) {
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
      if (status.reason === "invalid_session_id") return "Invalid session id";
      return status.reason === "gave_up" ? `Disconnected after ${status.attempt} attempts` : "Disconnected";
    default:
      return "Starting…";
  }
}

const INVALID = Object.freeze({ state: "closed", reason: "invalid_session_id", message: "invalid session id" });
const IDLE = Object.freeze({ state: "idle" });

// Shared by both elements' shadow roots: the level colours, overridable from the page. Light or dark as
// the page is (its color-scheme), not as the system is: a light page in a dark system stays light.
const BASE_STYLE = `
:host {
  display: block;
  --_normal: var(--ctxmeter-normal, light-dark(#2563eb, #3b82f6));
  --_warning: var(--ctxmeter-warning, #ea7c0c);
  --_critical: var(--ctxmeter-critical, #dc2626);
  --_normal-text: var(--ctxmeter-normal-text, light-dark(#1d4ed8, #7aa7ff));
  --_warning-text: var(--ctxmeter-warning-text, light-dark(#b45309, #f59e42));
  --_critical-text: var(--ctxmeter-critical-text, light-dark(#c81e1e, #ff7a7a));
  --_track: var(--ctxmeter-track, light-dark(#e6eaf1, #283243));
  --_muted: var(--ctxmeter-muted, light-dark(#5b6472, #9aa4b4));
  --_surface: var(--ctxmeter-surface, light-dark(#f5f7fb, #0f141c));
  --_green: var(--ctxmeter-live, #16a34a);
}
:host([hidden]) { display: none; }
[hidden] { display: none !important; }
p { margin: 0; }
.muted { color: var(--_muted); }
.status { display: inline-flex; align-items: center; gap: 6px; margin-top: 6px; font-size: 0.85rem; color: var(--_muted); }
.status::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: var(--_muted); }
.status[data-state="open"]::before { background: var(--_green); }
.status[data-state="connecting"]::before, .status[data-state="reconnecting"]::before { background: var(--_warning); }
.status[data-state="closed"]::before, .status[data-state="auth_failed"]::before { background: var(--_critical); }
@media (prefers-reduced-motion: reduce) {
  *, *::before, *::after { animation: none !important; transition: none !important; }
}
`;

/** What both elements share: attributes, the shared client, getToken, status. */
class MeterElement extends HTMLElement {
  static observedAttributes = ["session-id", "url"];
  #entry = null;
  #offs = [];
  #getToken = undefined;
  #status = IDLE;

  connectedCallback() {
    this.#attach();
  }

  disconnectedCallback() {
    this.#detach();
  }

  attributeChangedCallback(name, before, after) {
    if (before === after || !this.isConnected) return;
    this.#detach();
    this.#attach();
  }

  /** The session followed (the `session-id` attribute). */
  get sessionId() {
    return this.getAttribute("session-id") ?? "";
  }

  set sessionId(value) {
    this.setAttribute("session-id", value);
  }

  get url() {
    return this.getAttribute("url") ?? "";
  }

  set url(value) {
    if (value) this.setAttribute("url", value);
    else this.removeAttribute("url");
  }

  /** A function giving a JWT (or a promise of one), for an edge with auth on. */
  get getToken() {
    return this.#getToken;
  }

  set getToken(value) {
    if (value !== undefined && value !== null && typeof value !== "function") {
      throw new TypeError("getToken must be a function returning a token (or a promise of one)");
    }
    this.#getToken = value ?? undefined;
    if (this.#getToken && this.#entry) tokenArrived(this.#entry);
  }

  /** The shared CtxMeter of this element's session, or null while the element is not on the page. */
  get client() {
    return this.#entry?.client ?? null;
  }

  /** The connection status (as CtxMeter's `status`). */
  get status() {
    return this.#status;
  }

  #attach() {
    this.#detach();
    const sessionId = this.sessionId;
    if (!SESSION_ID_PATTERN.test(sessionId)) {
      this.#setStatus(sessionId === "" ? IDLE : INVALID);
      return;
    }
    this.#entry = acquire(this, this.url, sessionId);
    this._rebind();
  }

  #detach() {
    for (const off of this.#offs) off();
    this.#offs = [];
    if (this.#entry) release(this.#entry, this);
    this.#entry = null;
  }

  /** Listen to the (new) shared client and show what it holds. */
  _rebind() {
    for (const off of this.#offs) off();
    const client = this.#entry.client;
    this.#offs = [
      client.on("status", (status) => this.#setStatus(status)),
      ...this.listen(client),
    ];
    this.#setStatus(client.status);
    this.shown(client);
  }

  #setStatus(status) {
    this.#status = status;
    this.setAttribute("state", status.state);
    this.showStatus(status);
    this.dispatchEvent(new CustomEvent("ctxmeter-status", { detail: status, bubbles: true, composed: true }));
  }

  /** Subclasses: listen to the client (returning the offs), show its state and the status. */
  listen(client) {
    return [];
  }
  shown(client) {}
  showStatus(status) {}
}

// -- <ctxmeter-context> -----------------------------------------------------------------------------

const LEVEL_WORDS = {
  normal: "Plenty of room left in the context window.",
  warning: "Warning: the context window is filling up.",
  critical: "Critical: the context window is nearly full. Compress or start a new session.",
};

const CONTEXT_STYLE = `
.ring-wrap { display: flex; flex-wrap: wrap; gap: 12px 20px; align-items: center; justify-content: center; }
.ring {
  position: relative; flex: none; width: var(--ctxmeter-ring-size, min(200px, 64vw)); aspect-ratio: 1;
  --level-colour: var(--_normal); --level-text: var(--_normal-text);
}
.ring[data-level="warning"] { --level-colour: var(--_warning); --level-text: var(--_warning-text); }
.ring[data-level="critical"] { --level-colour: var(--_critical); --level-text: var(--_critical-text); }
.ring[data-live="false"] { opacity: 0.5; transition: opacity 0.3s ease; }
.ring svg { display: block; width: 100%; height: 100%; }
.ring-track, .ring-arc { fill: none; stroke-width: 12; }
.ring-track { stroke: var(--_track); }
.ring-arc {
  stroke: var(--level-colour); stroke-dasharray: 100 100; stroke-dashoffset: 100; stroke-linecap: round;
  transition: stroke-dashoffset 0.6s cubic-bezier(0.22, 1, 0.36, 1), stroke 0.35s ease;
}
.ring[data-empty="true"] .ring-arc { stroke-linecap: butt; }
.ring-threshold { fill: none; stroke: currentColor; stroke-width: 14; stroke-dasharray: 1 99; opacity: 0.8; }
.ring-centre { position: absolute; inset: 0; display: flex; flex-direction: column; align-items: center; justify-content: center; }
.ring-percent {
  font-size: clamp(1.7rem, 8vw, 2.3rem); font-weight: 700; font-variant-numeric: tabular-nums;
  color: var(--level-text); transition: color 0.35s ease;
}
.ring-caption { color: var(--_muted); font-size: 0.85rem; }
.ring-side { flex: 1 1 150px; max-width: 220px; min-width: 0; }
.ring-side p { margin: 0 0 6px; }
.left-line { display: flex; flex-direction: column; }
.left-number { font-size: 1.6rem; font-weight: 700; font-variant-numeric: tabular-nums; line-height: 1.15; overflow-wrap: anywhere; }
.left-line[data-level="warning"] .left-number { color: var(--_warning-text); }
.left-line[data-level="critical"] .left-number { color: var(--_critical-text); }
.left-caption { font-size: 0.9rem; }
.side-line { font-size: 0.85rem; font-variant-numeric: tabular-nums; color: var(--_muted); }
.figures { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; margin: 16px 0 8px; }
.figures div { padding: 8px 12px; border-radius: 10px; background: var(--_surface); }
.figures dt { color: var(--_muted); font-size: 0.8rem; }
.figures dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
.unit { color: var(--_muted); font-weight: 400; font-size: 0.85rem; }
.badge {
  display: inline-block; margin-left: 4px; padding: 0 8px; border-radius: 999px; border: 1px solid var(--_warning-text);
  color: var(--_warning-text); font-size: 0.75rem; font-weight: 600; vertical-align: 1px;
}
.level-text { font-size: 0.9rem; }
.compactions { margin: 1em 0; }
.stale-note { margin-top: 6px; color: var(--_muted); font-size: 0.85rem; font-style: italic; }
@media (max-width: 480px) {
  .ring-side { flex-basis: 100%; max-width: none; text-align: center; }
  .left-line { align-items: center; }
}
`;

const CONTEXT_HTML = `
<div class="ring-wrap" part="container">
  <div id="context-ring" part="ring" class="ring" role="meter" aria-valuemin="0" aria-valuemax="1"
       aria-valuenow="0" aria-valuetext="Waiting for the session's state" data-level="normal">
    <svg viewBox="0 0 120 120" aria-hidden="true" focusable="false">
      <circle part="track" class="ring-track" cx="60" cy="60" r="52" pathLength="100" />
      <circle id="context-arc" part="arc" class="ring-arc" cx="60" cy="60" r="52" pathLength="100" transform="rotate(-90 60 60)" />
      <circle id="context-threshold" part="threshold" class="ring-threshold" cx="60" cy="60" r="52" pathLength="100"
              transform="rotate(-90 60 60)" display="none" />
    </svg>
    <div class="ring-centre" aria-hidden="true">
      <span id="context-percent" part="percent" class="ring-percent">–</span>
      <span part="caption" class="ring-caption">used</span>
    </div>
  </div>
  <div id="context-policy" part="policy" class="ring-side" hidden>
    <p id="context-left" part="left" class="left-line">
      <span id="context-left-number" class="left-number">–</span>
      <span class="left-caption">tokens left before compaction</span>
    </p>
    <p id="context-compact-at" part="compact-at" class="side-line"></p>
    <p id="context-reserved" part="reserved" class="side-line" hidden></p>
  </div>
</div>
<dl class="figures" part="figures">
  <div>
    <dt>Used</dt>
    <dd>
      <span id="context-used" part="used">–</span> <span class="unit">tokens</span>
      <span id="context-estimated" part="estimated" class="badge"
            title="Includes add/free estimates since the provider's last usage report" hidden>Estimated</span>
    </dd>
  </div>
  <div>
    <dt>Window</dt>
    <dd><span id="context-total" part="total">–</span> <span class="unit">tokens</span></dd>
  </div>
</dl>
<p id="context-level" part="level" class="level-text">Waiting for the first update…</p>
<p id="context-compactions" part="compactions" class="side-line compactions" hidden></p>
<p id="context-reasoning" part="reasoning" class="side-line muted" hidden></p>
<p id="context-window" part="window" class="side-line muted" hidden></p>
<p id="context-status" part="status" class="status" data-state="idle" role="status">Starting…</p>
<p id="context-stale" part="stale" class="stale-note" hidden>Last known value: it updates again once the connection is back.</p>
`;

/** The point at which the agent compacts (the window when the edge predates compaction policies). */
function compactAtOf(usage) {
  return Number.isInteger(usage.compact_at) && usage.compact_at > 0 ? usage.compact_at : usage.total;
}

/** A compaction policy is set: tokens reserved for the reply, or a compaction point below the window. */
function hasPolicy(usage) {
  return (usage.reserved ?? 0) > 0 || compactAtOf(usage) < usage.total;
}

export class CtxmeterContextElement extends MeterElement {
  static observedAttributes = [...MeterElement.observedAttributes, "label"];
  #el = null;
  #usage = null;

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = `<style>${BASE_STYLE}${CONTEXT_STYLE}</style>${CONTEXT_HTML}`;
    const $ = (id) => root.getElementById(id);
    this.#el = {
      ring: $("context-ring"),
      arc: $("context-arc"),
      threshold: $("context-threshold"),
      percent: $("context-percent"),
      policy: $("context-policy"),
      left: $("context-left"),
      leftNumber: $("context-left-number"),
      compactAt: $("context-compact-at"),
      reserved: $("context-reserved"),
      used: $("context-used"),
      total: $("context-total"),
      estimated: $("context-estimated"),
      level: $("context-level"),
      compactions: $("context-compactions"),
      reasoning: $("context-reasoning"),
      window: $("context-window"),
      status: $("context-status"),
      stale: $("context-stale"),
    };
    this.#el.ring.setAttribute("aria-label", "Context window");
  }

  attributeChangedCallback(name, before, after) {
    if (name === "label") {
      this.#el.ring.setAttribute("aria-label", after || "Context window");
      return;
    }
    super.attributeChangedCallback(name, before, after);
  }

  /** The latest ContextUsage shown, or null before the first. */
  get usage() {
    return this.#usage;
  }

  listen(client) {
    return [client.on("context", (usage) => this.#render(usage, true))];
  }

  shown(client) {
    if (client.context) this.#render(client.context, false);
  }

  showStatus(status) {
    const el = this.#el;
    el.status.dataset.state = status.state;
    el.status.textContent = statusText(status);
    // Until the socket is open again, the figures are the last known ones: say so.
    const live = status.state === "open";
    el.stale.hidden = live || this.#usage === null;
    el.ring.dataset.live = String(live);
  }

  #render(usage, changed) {
    this.#usage = usage;
    const el = this.#el;
    const percentage = clampPercent(usage.percentage);
    const level = levelOf(usage, 80, 90);
    const shown = percentText(percentage);
    const policy = hasPolicy(usage);
    const compactAt = compactAtOf(usage);
    const left = Number.isInteger(usage.left) ? usage.left : Math.max(0, compactAt - usage.used);
    this.setAttribute("level", level);
    el.ring.dataset.level = level;
    el.ring.dataset.revision = String(usage.revision ?? "");
    el.ring.dataset.empty = String(usage.used === 0);
    el.ring.setAttribute("aria-valuemax", String(usage.total));
    el.ring.setAttribute("aria-valuenow", String(Math.min(usage.used, usage.total)));
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
    el.stale.hidden = this.status.state === "open";
    if (changed) {
      this.dispatchEvent(new CustomEvent("ctxmeter-context", { detail: usage, bubbles: true, composed: true }));
    }
  }
}

// -- <ctxmeter-draft> ---------------------------------------------------------------------------------

const DRAFT_STYLE = `
.draft-figures { margin: 0 0 6px; font-variant-numeric: tabular-nums; }
#draft-count { font-weight: 700; }
.bar { height: 10px; border-radius: 999px; background: var(--_track); overflow: hidden; --level-colour: var(--_normal); }
.bar[data-level="warning"] { --level-colour: var(--_warning); }
.bar[data-level="critical"] { --level-colour: var(--_critical); }
.bar-fill { height: 100%; width: 0; border-radius: inherit; background: var(--level-colour); transition: width 0.3s ease, background-color 0.3s ease; }
.draft-state { min-height: 1.45em; margin: 8px 0 0; font-size: 0.9rem; }
.draft-state[data-level="warning"] { color: var(--_warning-text); font-weight: 600; }
.draft-state[data-level="critical"], .draft-state[data-level="error"] { color: var(--_critical-text); font-weight: 600; }
.draft-state[data-pending="true"] { color: var(--_muted); font-weight: 400; }
`;

const DRAFT_HTML = `
<div part="container">
  <p class="draft-figures" part="figures">
    <span id="draft-count" part="count">0</span> / <span id="draft-max" part="max">–</span> tokens
    <span id="draft-encoding" part="encoding" class="muted"></span>
  </p>
  <div id="draft-bar" part="bar" class="bar" role="meter" aria-valuemin="0" aria-valuemax="1" aria-valuenow="0"
       data-level="normal"><div class="bar-fill" part="fill"></div></div>
  <p id="draft-state" part="state" class="draft-state" aria-live="polite" data-pending="false"></p>
</div>
`;

const DEFAULT_DEBOUNCE_MS = 300;

/** Context windows by model name, per edge: read once (GET /api/counters/models) for the limit shown before the first count. */
const windows = new Map();

function modelWindows(client, key) {
  let known = windows.get(key);
  if (!known) {
    known = client.models().then(
      (reply) => new Map((reply?.models ?? []).flatMap((m) => [m.name, ...(m.aliases ?? [])].map((n) => [n, m.context_window]))),
      () => new Map(),
    );
    windows.set(key, known);
  }
  return known;
}

export class CtxmeterDraftElement extends MeterElement {
  static observedAttributes = [...MeterElement.observedAttributes, "for", "max-tokens", "debounce-ms", "model", "label"];
  #el = null;
  #text = "";
  #timer = null;
  #pending = false;
  #error = null;
  #latest = null;
  /** Where input events are heard (the document or shadow root holding the element). */
  #inputRoot = null;
  /** On the page with its first attributes taken. */
  #settled = false;
  #onInput = (event) => {
    const id = this.getAttribute("for");
    if (id && event.target?.id === id && typeof event.target.value === "string") {
      this.#changed(event.target.value, false);
    }
  };

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = `<style>${BASE_STYLE}${DRAFT_STYLE}</style>${DRAFT_HTML}`;
    const $ = (id) => root.getElementById(id);
    this.#el = {
      count: $("draft-count"),
      max: $("draft-max"),
      encoding: $("draft-encoding"),
      bar: $("draft-bar"),
      fill: root.querySelector(".bar-fill"),
      state: $("draft-state"),
    };
    this.#el.bar.setAttribute("aria-label", "Draft size against the model's limit");
  }

  connectedCallback() {
    super.connectedCallback();
    this.#follow();
    this.#settled = true;
  }

  disconnectedCallback() {
    this.#settled = false;
    this.#unfollow();
    clearTimeout(this.#timer);
    this.#timer = null;
    super.disconnectedCallback();
  }

  attributeChangedCallback(name, before, after) {
    if (before === after) return;
    if (name === "label") {
      this.#el.bar.setAttribute("aria-label", after || "Draft size against the model's limit");
    } else if (name === "for") {
      if (this.isConnected) this.#follow();
    } else if (name === "max-tokens" || name === "model") {
      this.#showLimit();
      // A change after the element is on the page counts again at once (not the attributes it starts with).
      if (this.#settled && this.client) this.#changed(this.#text, true);
    } else if (name !== "debounce-ms") {
      super.attributeChangedCallback(name, before, after);
    }
  }

  /** The text counted: the `for` text box's, or what was set here. Setting it counts it (debounced). */
  get text() {
    return this.#text;
  }

  set text(value) {
    this.#changed(String(value ?? ""), false);
  }

  /** True while a count waits for the pause after typing or for its reply. */
  get pending() {
    return this.#pending;
  }

  /** The latest TokenUsage of the session's draft, or null. */
  get usage() {
    return this.client?.tokens ?? null;
  }

  get maxTokens() {
    const value = Number.parseInt(this.getAttribute("max-tokens") ?? "", 10);
    return Number.isInteger(value) && value > 0 ? value : undefined;
  }

  get debounceMs() {
    const value = Number.parseInt(this.getAttribute("debounce-ms") ?? "", 10);
    return Number.isInteger(value) && value >= 0 ? value : DEFAULT_DEBOUNCE_MS;
  }

  get model() {
    return this.getAttribute("model") || undefined;
  }

  listen(client) {
    return [
      client.on("tokens", (usage) => {
        this.#render(usage);
        this.dispatchEvent(new CustomEvent("ctxmeter-draft", { detail: usage, bubbles: true, composed: true }));
      }),
    ];
  }

  shown(client) {
    if (client.tokens) this.#render(client.tokens);
    else this.#showLimit();
  }

  /** Hear the `for` text box's input events, wherever and whenever it is rendered (frameworks replace it). */
  #follow() {
    this.#unfollow();
    const id = this.getAttribute("for");
    if (!id) return;
    const root = this.getRootNode();
    this.#inputRoot = root;
    root.addEventListener("input", this.#onInput);
    const box = root.getElementById?.(id);
    if (typeof box?.value === "string") this.#text = box.value;
  }

  #unfollow() {
    this.#inputRoot?.removeEventListener("input", this.#onInput);
    this.#inputRoot = null;
  }

  #changed(text, immediate) {
    this.#text = text;
    this.#pending = true;
    this.#error = null;
    this.#renderState();
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#count(), immediate ? 0 : this.debounceMs);
  }

  #count() {
    this.#timer = null;
    const client = this.client;
    if (!client) return;
    const count = client.countDraft(this.#text, { model: this.model, max: this.maxTokens, immediate: true });
    this.#latest = count;
    count.then(
      () => {
        if (count !== this.#latest || this.#timer !== null) return;
        this.#pending = false;
        this.#renderState();
      },
      (error) => {
        if (count !== this.#latest || this.#timer !== null) return;
        this.#pending = false;
        this.#error = error;
        this.#renderState();
      },
    );
  }

  async #showLimit() {
    if (this.client?.tokens) return;
    const max = this.maxTokens;
    if (max !== undefined) {
      this.#el.max.textContent = numbers.format(max);
      this.#el.bar.setAttribute("aria-valuemax", String(max));
      return;
    }
    const model = this.model;
    const client = this.client;
    if (!model || !client) return;
    const known = await modelWindows(client, clientKey(this.url, "models"));
    if (known.has(model) && !this.client?.tokens && this.model === model && this.maxTokens === undefined) {
      this.#el.max.textContent = numbers.format(known.get(model));
      this.#el.bar.setAttribute("aria-valuemax", String(known.get(model)));
    }
  }

  #render(usage) {
    const el = this.#el;
    const percentage = clampPercent(usage.percentage);
    const level = levelOf(usage, 80, 95);
    this.setAttribute("level", level);
    el.count.textContent = numbers.format(usage.count);
    el.max.textContent = numbers.format(usage.max);
    el.encoding.textContent = usage.exact ? `· ${usage.encoding}` : `· estimate (${usage.encoding})`;
    el.bar.dataset.level = level;
    el.bar.setAttribute("aria-valuemax", String(usage.max));
    el.bar.setAttribute("aria-valuenow", String(Math.min(usage.count, usage.max)));
    el.bar.setAttribute("aria-valuetext", `${numbers.format(usage.count)} of ${numbers.format(usage.max)} tokens`);
    el.fill.style.width = `${percentage}%`;
    this.#renderState();
  }

  #renderState() {
    const usage = this.client?.tokens;
    const state = this.#el.state;
    state.dataset.pending = String(this.#pending);
    this.toggleAttribute("pending", this.#pending);
    if (this.#pending) {
      state.dataset.level = usage ? levelOf(usage, 80, 95) : "normal";
      state.textContent = "Calculating…";
    } else if (this.#error) {
      state.dataset.level = "error";
      state.textContent = `Could not count the draft: ${this.#error.message}`;
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
}

if (!customElements.get("ctxmeter-context")) customElements.define("ctxmeter-context", CtxmeterContextElement);
if (!customElements.get("ctxmeter-draft")) customElements.define("ctxmeter-draft", CtxmeterDraftElement);
