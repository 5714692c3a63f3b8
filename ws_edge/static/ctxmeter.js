/**
 * ctxmeter.js — the browser client of ctxmeter's WebSocket edge.
 *
 * A dependency-free ES module (no build step). One client follows one session:
 *
 *   import { CtxMeter } from "/static/ctxmeter.js";
 *
 *   const meter = new CtxMeter({ sessionId: "my-session", token });   // connects on the next microtask
 *   const off = meter.on("context", (usage) => render(usage));         // ContextUsage
 *   meter.on("tokens", (usage) => renderDraft(usage));                 // TokenUsage (the session's draft)
 *   meter.on("status", (status) => showStatus(status));                // connecting | open | reconnecting | closed | auth_failed
 *   textarea.oninput = () => meter.countDraft(textarea.value, { model: "gpt-4o" });   // debounced, 300 ms
 *   off(); meter.close();
 *
 * Behaviour (the "Browser client" section of the design):
 * - Reconnects with exponential backoff and full jitter: the delay before attempt n is a uniform random
 *   value in [0, min(capMs, baseMs * 2^(n-1))). Attempts are unlimited by default; `maxAttempts: 5` is the
 *   seed's behaviour. The attempt counter resets once a new socket delivers its first frame.
 * - Sends `{"type":"ping"}` every `pingIntervalMs` (30 s) and reconnects when no pong comes within
 *   `pongTimeoutMs`.
 * - After every (re)connect the server sends the session's current state first; the first frame of each
 *   type on a new socket replaces what the client holds (it is the server's truth, even when the state was
 *   reset or expired). After that, a frame whose `data.revision` is older than the one held for its type
 *   is dropped, so the meter never steps back to a stale value.
 * - A browser cannot read the HTTP status of a refused WebSocket upgrade. When a socket fails before it
 *   opens, the client asks `GET /api/counters/context/<sid>` with the same token: a 401 or 403 there ends
 *   in the `auth_failed` status, with no retry loop.
 * - `wss:` on `https:` pages; the token goes in `?token=` on the socket and in `Authorization: Bearer` on
 *   HTTP.
 */

/** Session ids the server accepts: 1–128 characters of A-Z a-z 0-9 _ -. */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

/** Default options; every one can be overridden per client. */
export const DEFAULTS = Object.freeze({
  reconnect: Object.freeze({ baseMs: 500, capMs: 30_000, maxAttempts: Infinity }),
  pingIntervalMs: 30_000,
  pongTimeoutMs: 10_000,
  debounceMs: 300,
  requestTimeoutMs: 15_000,
});

/** Close codes an edge may use after the upgrade to say the token no longer holds. */
const AUTH_CLOSE_CODES = new Set([4401, 4403]);
/** Our own close code when the server stopped answering pings (4000–4999 are for applications). */
const PONG_TIMEOUT_CLOSE = 4000;
const EVENT_KINDS = ["context", "tokens", "status", "error"];

/** An error from the edge (its `{"error": {"code", "message"}}` body) or from the client itself. */
export class CtxMeterError extends Error {
  /**
   * @param {string} code  the edge's error code (`invalid_request`, `unauthorized`...) or the client's
   *                       (`network`, `timeout`, `closed`)
   * @param {string} message
   * @param {number} [status]  the HTTP status, 0 when there was no response
   */
  constructor(code, message, status = 0) {
    super(message);
    this.name = "CtxMeterError";
    this.code = code;
    this.status = status;
  }
}

/** The largest delay (ms) before reconnect attempt `attempt` (1-based): min(cap, base · 2^(attempt-1)). */
export function backoffCeiling(attempt, { baseMs, capMs }) {
  return Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
}

/** The delay (ms) before reconnect attempt `attempt`, with full jitter: uniform in [0, ceiling). */
export function backoffDelay(attempt, reconnect, random = Math.random) {
  return Math.floor(random() * backoffCeiling(attempt, reconnect));
}

/**
 * The URLs a client uses. `url` is the edge's base URL (http, https, ws or wss; a path prefix is kept);
 * without it, the page's own origin. The socket is `wss:` whenever the base is `https:`.
 * @returns {{socket: string, context: string, draft: string}}
 */
export function endpoints({ url, sessionId, token }, base = globalThis.location?.href) {
  const root = new URL(url ?? "/", base);
  if (root.protocol === "ws:") root.protocol = "http:";
  if (root.protocol === "wss:") root.protocol = "https:";
  root.search = "";
  root.hash = "";
  if (!root.pathname.endsWith("/")) root.pathname += "/";
  const sid = encodeURIComponent(sessionId);
  const socket = new URL(`api/ws/counters/${sid}`, root);
  socket.protocol = root.protocol === "https:" ? "wss:" : "ws:";
  if (token) socket.searchParams.set("token", token);
  return {
    socket: socket.href,
    context: new URL(`api/counters/context/${sid}`, root).href,
    draft: new URL(`api/counters/tokens/${sid}`, root).href,
  };
}

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: keep the status line
  }
  const detail = body && typeof body === "object" ? body.error : null;
  const code = detail?.code ?? `http_${response.status}`;
  const message = detail?.message ?? `${response.status} ${response.statusText}`.trim();
  return new CtxMeterError(code, message, response.status);
}

/** A live meter for one session. */
export class CtxMeter {
  #options;
  #urls;
  #listeners = new Map(EVENT_KINDS.map((kind) => [kind, new Set()]));
  #status = Object.freeze({ state: "idle" });
  #socket = null;
  #stopped = true;
  #attempt = 0;
  #retryTimer = null;
  #pingTimer = null;
  #pongTimer = null;
  /** Latest data per kind ("context" | "tokens"). */
  #held = { context: null, tokens: null };
  /** Whether the next frame of a kind is the first on a new socket (the server's current state). */
  #snapshotDue = { context: false, tokens: false };
  #draft = { timer: null, text: "", model: undefined, max: undefined, waiter: null, inFlight: false, queued: false };
  #onOnline = () => this.#retryNow();

  /**
   * @param {object} options
   * @param {string} options.sessionId
   * @param {string} [options.url]  the edge's base URL; default: the page's origin
   * @param {string} [options.token]  a JWT, when the edge requires one
   * @param {string} [options.model]  default model for countDraft
   * @param {{baseMs?: number, capMs?: number, maxAttempts?: number}} [options.reconnect]
   * @param {number} [options.pingIntervalMs]
   * @param {number} [options.pongTimeoutMs]
   * @param {number} [options.debounceMs]
   * @param {number} [options.requestTimeoutMs]
   * @param {boolean} [options.autoConnect]  default true: connect on the next microtask, so listeners
   *                                         added right after the constructor see every status
   */
  constructor(options) {
    const { sessionId } = options ?? {};
    if (typeof sessionId !== "string" || !SESSION_ID_PATTERN.test(sessionId)) {
      throw new TypeError("sessionId must be 1-128 characters of A-Z a-z 0-9 _ -");
    }
    const reconnect = { ...DEFAULTS.reconnect, ...(options.reconnect ?? {}) };
    if (!(reconnect.baseMs > 0) || !(reconnect.capMs >= reconnect.baseMs) || !(reconnect.maxAttempts >= 0)) {
      throw new RangeError("reconnect needs baseMs > 0, capMs >= baseMs and maxAttempts >= 0");
    }
    this.#options = Object.freeze({ ...DEFAULTS, ...options, reconnect: Object.freeze(reconnect) });
    this.#urls = endpoints(this.#options);
    if (this.#options.autoConnect ?? true) {
      this.#stopped = false;
      queueMicrotask(() => {
        if (!this.#stopped && this.#socket === null && this.#retryTimer === null) this.#open();
      });
    }
  }

  /** The session this client follows. */
  get sessionId() {
    return this.#options.sessionId;
  }

  /** The options in effect (defaults filled in). */
  get options() {
    return this.#options;
  }

  /** The current status: `{state, attempt?, delayMs?, ceilingMs?, code?, reason?, message?, httpStatus?}`. */
  get status() {
    return this.#status;
  }

  /** The latest ContextUsage, or null before the first frame. */
  get context() {
    return this.#held.context;
  }

  /** The latest TokenUsage of the session's draft, or null when none is known. */
  get tokens() {
    return this.#held.tokens;
  }

  /** True while a draft count is waiting for its pause or its reply. */
  get draftPending() {
    const d = this.#draft;
    return d.timer !== null || d.inFlight || d.queued;
  }

  /**
   * Listen to "context" (ContextUsage, frame), "tokens" (TokenUsage, frame), "status" (status) or
   * "error" (CtxMeterError from a draft request). Returns a function that removes the listener.
   */
  on(kind, listener) {
    const set = this.#listeners.get(kind);
    if (!set) throw new TypeError(`unknown event "${kind}"; use one of ${EVENT_KINDS.join(", ")}`);
    if (typeof listener !== "function") throw new TypeError("listener must be a function");
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Start (or restart after `close()` or `auth_failed`) following the session. */
  connect() {
    this.#stopped = false;
    this.#attempt = 0;
    if (this.#socket === null) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
      this.#open();
    }
    return this;
  }

  /** Stop for good: closes the socket, cancels timers and rejects a pending draft count. */
  close() {
    const quiet = this.#status.state === "closed" || this.#status.state === "auth_failed";
    this.#stopped = true;
    globalThis.removeEventListener?.("online", this.#onOnline);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#dropSocket(1000, "client closed");
    const d = this.#draft;
    clearTimeout(d.timer);
    d.timer = null;
    d.queued = false;
    if (d.waiter) {
      d.waiter.reject(new CtxMeterError("closed", "the client was closed"));
      d.waiter = null;
    }
    if (!quiet) this.#setStatus({ state: "closed", reason: "client" });
  }

  /**
   * Count a draft message for the session, debounced: calls within `debounceMs` of each other make one
   * request (POST /api/counters/tokens/<sid>) with the latest text, after the pause. Every call of one
   * pause gets the same promise, resolved with the TokenUsage (also emitted as "tokens").
   * `{immediate: true}` skips the pause (e.g. when the model changes).
   */
  countDraft(text, { model, max, immediate = false } = {}) {
    if (typeof text !== "string") throw new TypeError("text must be a string");
    const d = this.#draft;
    d.text = text;
    d.model = model ?? this.#options.model;
    d.max = max;
    d.waiter ??= deferred();
    const { promise } = d.waiter;
    clearTimeout(d.timer);
    d.timer = setTimeout(() => this.#sendDraft(), immediate ? 0 : this.#options.debounceMs);
    return promise;
  }

  /**
   * Feed one frame as the edge sends it (a JSON string or the parsed object). The client's own socket
   * uses this too; it is public for custom transports and tests. Returns true when the frame was applied.
   */
  receive(frame) {
    let message = frame;
    if (typeof frame === "string") {
      try {
        message = JSON.parse(frame);
      } catch {
        return false;
      }
    }
    if (message === null || typeof message !== "object") return false;
    switch (message.type) {
      case "pong":
        clearTimeout(this.#pongTimer);
        this.#pongTimer = null;
        return true;
      case "context_update":
        return this.#apply("context", message);
      case "token_count":
        return this.#apply("tokens", message);
      default:
        return false; // newer servers may send more types
    }
  }

  // -- internals --------------------------------------------------------------------------

  #emit(kind, ...args) {
    for (const listener of [...this.#listeners.get(kind)]) {
      try {
        listener(...args);
      } catch (error) {
        // A broken listener must not break the client or the other listeners.
        (globalThis.reportError ?? console.error)(error);
      }
    }
  }

  #setStatus(status) {
    this.#status = Object.freeze(status);
    this.#emit("status", this.#status);
  }

  #apply(kind, message) {
    const data = message.data;
    if (data === null || typeof data !== "object") return false;
    if (message.session_id !== undefined && message.session_id !== this.sessionId) return false;
    const snapshot = this.#snapshotDue[kind];
    this.#snapshotDue[kind] = false;
    const held = this.#held[kind];
    if (!snapshot && held && Number.isInteger(held.revision) && Number.isInteger(data.revision)) {
      if (data.revision < held.revision) return false;
    }
    this.#held[kind] = data;
    this.#emit(kind, data, message);
    return true;
  }

  #open() {
    if (this.#stopped) return;
    this.#retryTimer = null;
    this.#setStatus(this.#attempt > 0 ? { state: "connecting", attempt: this.#attempt } : { state: "connecting" });
    let socket;
    try {
      socket = new WebSocket(this.#urls.socket);
    } catch (error) {
      // Only a malformed URL throws here; retrying would not help.
      this.#stopped = true;
      this.#setStatus({ state: "closed", reason: "invalid_url", message: String(error?.message ?? error) });
      return;
    }
    this.#socket = socket;
    let opened = false;
    socket.onopen = () => {
      if (socket !== this.#socket) return;
      opened = true;
      this.#snapshotDue = { context: true, tokens: true };
      this.#startHeartbeat(socket);
      this.#setStatus({ state: "open" });
    };
    socket.onmessage = (event) => {
      if (socket !== this.#socket || typeof event.data !== "string") return;
      if (this.receive(event.data)) this.#attempt = 0; // the connection works: back off from scratch next time
    };
    socket.onerror = () => {
      // Always followed by "close", which decides what to do.
    };
    socket.onclose = (event) => {
      if (socket !== this.#socket) return;
      this.#socket = null;
      this.#stopHeartbeat();
      this.#lost({ opened, code: event.code, reason: event.reason });
    };
  }

  /** Forget the current socket (its late events are ignored) and close it. */
  #dropSocket(code, reason) {
    const socket = this.#socket;
    this.#socket = null;
    this.#stopHeartbeat();
    if (socket && socket.readyState <= 1) {
      try {
        socket.close(code, reason);
      } catch {
        // already closing
      }
    }
  }

  async #lost({ opened, code, reason }) {
    if (this.#stopped) return;
    // The edge closes an open socket with 1008 "token expired" when the token runs out: retrying is useless.
    if (AUTH_CLOSE_CODES.has(code) || (code === 1008 && /token/i.test(reason))) {
      this.#authFailed(code === 4403 ? 403 : 401, { message: reason || "the token no longer grants this session" });
      return;
    }
    if (!opened) {
      const refusal = await this.#preflight();
      if (this.#stopped || this.#socket !== null || this.#retryTimer !== null) return;
      if (refusal && (refusal.status === 401 || refusal.status === 403)) {
        this.#authFailed(refusal.status, refusal);
        return;
      }
      if (refusal && refusal.status === 400) {
        this.#stopped = true;
        this.#setStatus({ state: "closed", reason: refusal.code, httpStatus: 400, message: refusal.message });
        return;
      }
    }
    this.#scheduleReconnect(opened ? { code, reason } : { code, reason: reason || "connect_failed" });
  }

  /** Why the edge refuses this session over HTTP, or null when it does not (or cannot be reached). */
  async #preflight() {
    try {
      const response = await this.#fetch(this.#urls.context, { method: "GET", cache: "no-store" });
      if (response.ok) return null;
      return await errorFrom(response);
    } catch {
      return null; // unreachable: the edge is down, keep retrying
    }
  }

  #authFailed(httpStatus, { code, message }) {
    this.#stopped = true;
    this.#setStatus({
      state: "auth_failed",
      httpStatus,
      code: code ?? (httpStatus === 403 ? "forbidden" : "unauthorized"),
      message:
        message ||
        (httpStatus === 403 ? "the token does not grant this session" : "a valid token is required"),
    });
  }

  #scheduleReconnect({ code, reason }) {
    const { reconnect } = this.#options;
    this.#attempt += 1;
    if (this.#attempt > reconnect.maxAttempts) {
      this.#stopped = true;
      this.#setStatus({ state: "closed", reason: "gave_up", attempt: this.#attempt - 1, code });
      return;
    }
    const ceilingMs = backoffCeiling(this.#attempt, reconnect);
    const delayMs = backoffDelay(this.#attempt, reconnect);
    this.#setStatus({ state: "reconnecting", attempt: this.#attempt, delayMs, ceilingMs, code, reason });
    this.#retryTimer = setTimeout(() => this.#open(), delayMs);
    globalThis.addEventListener?.("online", this.#onOnline, { once: true });
  }

  /** The network came back: skip the rest of the backoff wait. */
  #retryNow() {
    if (this.#stopped || this.#retryTimer === null) return;
    clearTimeout(this.#retryTimer);
    this.#open();
  }

  #startHeartbeat(socket) {
    this.#stopHeartbeat();
    const { pingIntervalMs, pongTimeoutMs } = this.#options;
    this.#pingTimer = setInterval(() => {
      if (socket !== this.#socket || socket.readyState !== 1) return;
      socket.send('{"type":"ping"}');
      this.#pongTimer ??= setTimeout(() => {
        if (socket !== this.#socket) return;
        // A half-open connection may take minutes to report "close": give up on it now.
        this.#dropSocket(PONG_TIMEOUT_CLOSE, "pong timeout");
        this.#scheduleReconnect({ code: PONG_TIMEOUT_CLOSE, reason: "pong_timeout" });
      }, pongTimeoutMs);
    }, pingIntervalMs);
  }

  #stopHeartbeat() {
    clearInterval(this.#pingTimer);
    clearTimeout(this.#pongTimer);
    this.#pingTimer = null;
    this.#pongTimer = null;
  }

  #fetch(url, init) {
    const headers = { Accept: "application/json", ...(init.headers ?? {}) };
    if (this.#options.token) headers.Authorization = `Bearer ${this.#options.token}`;
    const signal = AbortSignal.timeout?.(this.#options.requestTimeoutMs);
    return fetch(url, { ...init, headers, signal });
  }

  async #sendDraft() {
    const d = this.#draft;
    d.timer = null;
    if (d.inFlight) {
      d.queued = true; // one request at a time, so the stored draft is always the latest text
      return;
    }
    const waiter = d.waiter;
    d.waiter = null;
    if (!waiter) return;
    const body = { text: d.text };
    if (d.model) body.model = d.model;
    if (d.max !== undefined && d.max !== null) body.max = d.max;
    d.inFlight = true;
    try {
      let response;
      try {
        response = await this.#fetch(this.#urls.draft, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
      } catch (error) {
        const timedOut = error?.name === "TimeoutError";
        throw new CtxMeterError(timedOut ? "timeout" : "network", timedOut ? "the edge did not answer" : "the edge cannot be reached");
      }
      if (!response.ok) throw await errorFrom(response);
      const usage = await response.json();
      this.#apply("tokens", { type: "token_count", session_id: this.sessionId, data: usage });
      waiter.resolve(usage);
    } catch (error) {
      if (!this.#stopped) this.#emit("error", error);
      waiter.reject(error);
    } finally {
      d.inFlight = false;
      if (d.queued) {
        d.queued = false;
        if (!this.#stopped) this.#sendDraft();
      }
    }
  }
}

/** Shorthand: `connect("my-session", {token})` is `new CtxMeter({sessionId: "my-session", token})`. */
export function connect(sessionId, options = {}) {
  return new CtxMeter({ ...options, sessionId });
}
