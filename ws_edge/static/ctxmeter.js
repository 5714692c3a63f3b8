/**
 * ctxmeter.js — the browser client of ctxmeter's WebSocket edge.
 *
 * A dependency-free ES module (no build step). One client follows one session:
 *
 *   import { CtxMeter } from "/static/ctxmeter.js";
 *
 *   const meter = new CtxMeter({ sessionId: "my-session", getToken });  // connects on the next microtask
 *   const off = meter.on("context", (usage) => render(usage));         // ContextUsage
 *   meter.on("tokens", (usage) => renderDraft(usage));                 // TokenUsage (the session's draft)
 *   meter.on("status", (status) => showStatus(status));                // connecting | open | reconnecting | closed | auth_failed
 *   textarea.oninput = () => meter.countDraft(textarea.value, { model: "gpt-4o" });   // debounced, 300 ms
 *   const { points } = await meter.history({ limit: 100 });            // ContextHistory, oldest first
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
 *   is not applied, and neither is the very same state again (equal revision and content).
 * - Revisions are checked, not trusted blindly: a frame older than the one held makes the client ask the
 *   authority (`GET /api/counters/context/<sid>`, debounced: a burst makes one read). When the authority
 *   is behind what the client holds, the held revision was never real (a forged event, or a bucket deleted
 *   and made anew, whose revisions start again at 1): the authority's state replaces it, even at a lower
 *   revision, and so does a refused frame newer than that state. When the authority confirms the held
 *   revision, the older frame stays dropped (ordinary out-of-order delivery). Drafts have no read route:
 *   a refused draft frame is taken after the same check unless the held draft is this client's own
 *   counted draft and the check found no reset. A revision beyond 2^53 - 1 cannot be compared exactly in
 *   JavaScript and no real bucket reaches it: it is never applied, it only starts a check.
 * - Tokens: a fixed `token`, or an async `getToken()` called before each connect and again before the
 *   token expires (its JWT `exp`: at 80 % of the remaining life or 30 s before expiry, whichever is
 *   sooner, never sooner than half the remaining life nor than `renew.minMs`). A renewal opens a second
 *   socket with the new token, switches to it when its first state frame arrives and then closes the old
 *   one: the status stays "open", and the new socket's first frames are applied like any other (a frame the
 *   old socket already delivered is not delivered again). A failed renewal keeps the old socket and
 *   tries again with backoff. HTTP calls (drafts, history, models) use the current token.
 * - A browser cannot read the HTTP status of a refused WebSocket upgrade. When a socket fails before it
 *   opens, the client asks `GET /api/counters/context/<sid>` with the same token: a 401 or 403 there ends
 *   in the `auth_failed` status, with no retry loop. So does a close with 1008 "token ...", except that
 *   with `getToken` an expired token is replaced once by a later-expiring one before giving up.
 * - `wss:` on `https:` pages; the token goes in `?token=` on the socket and in `Authorization: Bearer` on
 *   HTTP.
 */

/** Session ids the server accepts: 1–128 characters of A-Z a-z 0-9 _ -. */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

/** Default options; every one can be overridden per client. */
export const DEFAULTS = Object.freeze({
  reconnect: Object.freeze({ baseMs: 500, capMs: 30_000, maxAttempts: Infinity }),
  /** Token renewal (with getToken): see renewDelay. */
  renew: Object.freeze({ share: 0.8, leadMs: 30_000, minMs: 1_000, capMs: 60_000 }),
  pingIntervalMs: 30_000,
  pongTimeoutMs: 10_000,
  debounceMs: 300,
  /** Pause before a revision check, so a burst of older frames makes one read. */
  checkDebounceMs: 100,
  requestTimeoutMs: 15_000,
});

/** Close codes an edge may use after the upgrade to say the token no longer holds. */
const AUTH_CLOSE_CODES = new Set([4401, 4403]);
/** Our own close code when the server stopped answering pings (4000–4999 are for applications). */
const PONG_TIMEOUT_CLOSE = 4000;
const EVENT_KINDS = ["context", "tokens", "status", "error"];
/** Revision checks that fail (edge unreachable) are retried this many times, with backoff. */
const CHECK_ATTEMPTS = 5;
const HISTORY_LIMIT_MAX = 1000;

/** An error from the edge (its `{"error": {"code", "message"}}` body) or from the client itself. */
export class CtxMeterError extends Error {
  /**
   * @param {string} code  the edge's error code (`invalid_request`, `unauthorized`...) or the client's
   *                       (`network`, `timeout`, `closed`, `token_unavailable`)
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
 * A JWT's `exp` claim in milliseconds since the epoch, read from its base64url-encoded payload (the
 * signature is the edge's to check, not the browser's). null when `token` is not a JWT or has no `exp`.
 */
export function tokenExpiry(token) {
  return claimMs(tokenClaims(token), "exp");
}

/** A JWT's payload (base64url-decoded JSON), or null. */
function tokenClaims(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), "="));
    const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims !== null && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** A NumericDate claim (seconds) in ms, or null. */
function claimMs(claims, name) {
  const value = claims?.[name];
  return typeof value === "number" && Number.isFinite(value) ? value * 1000 : null;
}

/**
 * How long (ms) to wait before renewing a token that expires at `expMs`: at `share` (80 %) of the
 * remaining life or `leadMs` (30 s) before expiry, whichever is sooner — but never sooner than half the
 * remaining life, nor than `minMs`, so short-lived or already-expired tokens cannot make a tight loop.
 */
export function renewDelay(expMs, nowMs, renew = DEFAULTS.renew) {
  const { share, leadMs, minMs } = { ...DEFAULTS.renew, ...renew };
  const remaining = expMs - nowMs;
  const planned = Math.max(Math.min(remaining * share, remaining - leadMs), remaining / 2);
  return Math.max(minMs, Math.floor(planned));
}

/**
 * The URLs a client uses. `url` is the edge's base URL (http, https, ws or wss; a path prefix is kept);
 * without it, the page's own origin. The socket is `wss:` whenever the base is `https:`.
 * @returns {{socket: string, context: string, draft: string, history: string, models: string}}
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
    history: new URL(`api/counters/context/${sid}/history`, root).href,
    models: new URL("api/counters/models", root).href,
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

/** What a failed fetch() becomes: a timeout, or the edge cannot be reached (a CtxMeterError stays as it is). */
function requestError(error) {
  if (error instanceof CtxMeterError) return error;
  return error?.name === "TimeoutError"
    ? new CtxMeterError("timeout", "the edge did not answer")
    : new CtxMeterError("network", "the edge cannot be reached");
}

function isRevision(value) {
  return Number.isInteger(value) && value >= 0;
}

function closeQuietly(socket, code, reason) {
  if (socket && socket.readyState <= 1) {
    try {
      socket.close(code, reason);
    } catch {
      // already closing
    }
  }
}

/** A live meter for one session. */
export class CtxMeter {
  #options;
  #urls;
  #listeners = new Map(EVENT_KINDS.map((kind) => [kind, new Set()]));
  #status = Object.freeze({ state: "idle" });
  /** The socket frames are taken from. */
  #socket = null;
  /** A socket opened with a renewed token, until its first frame makes it the current one. */
  #standby = null;
  #stopped = true;
  /** True while the next socket waits for getToken(). */
  #opening = false;
  /** Bumped by close(): an open that was waiting for a token gives up. */
  #generation = 0;
  #attempt = 0;
  #retryTimer = null;
  #pingTimer = null;
  #pongTimer = null;
  /** The token in use (the latest one getToken gave, or the fixed one). */
  #token;
  /** The token the current socket was opened with. */
  #socketToken;
  #tokenRequest = null;
  #renewTimer = null;
  #renewFailures = 0;
  /** Latest data per kind ("context" | "tokens"). */
  #held = { context: null, tokens: null };
  /** Whether the next frame of a kind is the first on a new socket (the server's current state). */
  #snapshotDue = { context: false, tokens: false };
  /** Whether the next frame of a kind is the first on a renewed socket (not delivered twice). */
  #switchDue = { context: false, tokens: false };
  /** The revision of the draft this client itself counted last (the functions' HTTP reply). */
  #ownDraftRevision = null;
  /** Revision checks against the authority: refused frames (newest per kind) wait for the next one. */
  #check = { timer: null, running: false, again: false, failures: 0, refused: { context: null, tokens: null } };
  #draft = { timer: null, text: "", model: undefined, max: undefined, waiter: null, inFlight: false, queued: false };
  #onOnline = () => this.#retryNow();

  /**
   * @param {object} options
   * @param {string} options.sessionId
   * @param {string} [options.url]  the edge's base URL; default: the page's origin
   * @param {string} [options.token]  a JWT, when the edge requires one
   * @param {() => Promise<string> | string} [options.getToken]  gives a token before each connect and
   *                                         again before the current one expires
   * @param {string} [options.model]  default model for countDraft
   * @param {{baseMs?: number, capMs?: number, maxAttempts?: number}} [options.reconnect]
   * @param {{share?: number, leadMs?: number, minMs?: number, capMs?: number}} [options.renew]
   * @param {number} [options.pingIntervalMs]
   * @param {number} [options.pongTimeoutMs]
   * @param {number} [options.debounceMs]
   * @param {number} [options.checkDebounceMs]
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
    const renew = { ...DEFAULTS.renew, ...(options.renew ?? {}) };
    const { share, leadMs, minMs, capMs } = renew;
    if (!(share > 0 && share < 1) || !(leadMs >= 0) || !(minMs > 0) || !(capMs >= minMs)) {
      throw new RangeError("renew needs 0 < share < 1, leadMs >= 0, minMs > 0 and capMs >= minMs");
    }
    if (options.getToken !== undefined && typeof options.getToken !== "function") {
      throw new TypeError("getToken must be a function returning a token (or a promise of one)");
    }
    this.#options = Object.freeze({
      ...DEFAULTS,
      ...options,
      reconnect: Object.freeze(reconnect),
      renew: Object.freeze(renew),
    });
    this.#token = this.#options.token || undefined;
    this.#urls = endpoints({ ...this.#options, token: undefined });
    if (this.#options.autoConnect ?? true) {
      this.#stopped = false;
      queueMicrotask(() => {
        if (!this.#stopped && this.#idle()) this.#open();
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

  /** True while a revision check (a frame older than the one held) waits for its pause or its reply. */
  get checkPending() {
    const check = this.#check;
    return check.timer !== null || check.running;
  }

  /**
   * Listen to "context" (ContextUsage, frame), "tokens" (TokenUsage, frame), "status" (status) or
   * "error" (CtxMeterError from a draft request or getToken). Returns a function that removes the listener.
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
    if (this.#idle()) {
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
    this.#generation += 1;
    this.#opening = false;
    globalThis.removeEventListener?.("online", this.#onOnline);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#dropSocket(1000, "client closed");
    const check = this.#check;
    clearTimeout(check.timer);
    check.timer = null;
    check.again = false;
    check.refused = { context: null, tokens: null };
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
   * The session's recent changes (GET /api/counters/context/<sid>/history): `{session_id, points}`,
   * oldest first, the last point being the current state. `limit`: newest points, 1–1000 (default 200).
   */
  async history({ limit } = {}) {
    const url = new URL(this.#urls.history);
    if (limit !== undefined && limit !== null) {
      if (!Number.isInteger(limit) || limit < 1 || limit > HISTORY_LIMIT_MAX) {
        throw new RangeError(`limit must be an integer from 1 to ${HISTORY_LIMIT_MAX}`);
      }
      url.searchParams.set("limit", String(limit));
    }
    return this.#getJson(url.href);
  }

  /** The models the edge knows (GET /api/counters/models): `{models: [ModelInfo]}`. */
  async models() {
    return this.#getJson(this.#urls.models);
  }

  /**
   * Feed one frame as the edge sends it (a JSON string or the parsed object). The client's own socket
   * uses this too; it is public for custom transports and tests. Returns true when the frame was applied
   * (false: unknown, malformed, or older than what is held — which starts a revision check).
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

  // -- internals: frames and revisions ------------------------------------------------------

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
    const switched = this.#switchDue[kind];
    this.#snapshotDue[kind] = false;
    this.#switchDue[kind] = false;
    const revision = data.revision;
    if (Number.isInteger(revision) && !Number.isSafeInteger(revision)) {
      // No bucket reaches 2^53 and such a number cannot be compared exactly: ask the authority instead.
      this.#suspect(kind, null);
      return false;
    }
    const held = this.#held[kind];
    if (!snapshot && held && isRevision(held.revision) && isRevision(revision)) {
      if (revision < held.revision) {
        this.#suspect(kind, message);
        return false;
      }
      if (revision === held.revision) {
        // A renewed socket's first state, which the old socket already delivered, or the same frame again
        // (a resync): not delivered twice.
        if (switched || JSON.stringify(data) === JSON.stringify(held)) return false;
      }
    }
    this.#take(kind, data, message);
    return true;
  }

  #take(kind, data, message) {
    this.#held[kind] = data;
    this.#emit(kind, data, message);
  }

  /** A frame older than the one held (or not comparable): check the held revision with the authority. */
  #suspect(kind, message) {
    const check = this.#check;
    if (message) {
      const refused = check.refused[kind];
      if (!refused || message.data.revision >= refused.data.revision) check.refused[kind] = message;
    }
    check.failures = 0;
    this.#scheduleCheck(this.#options.checkDebounceMs);
  }

  #scheduleCheck(delayMs) {
    const check = this.#check;
    if (check.running) {
      check.again = true;
      return;
    }
    if (check.timer !== null) return; // one read for the whole burst
    check.timer = setTimeout(() => this.#runCheck(), delayMs);
  }

  async #runCheck() {
    const check = this.#check;
    check.timer = null;
    check.running = true;
    check.again = false;
    const before = this.#held.context;
    const heldRevision = isRevision(before?.revision) ? before.revision : null;
    let authority = null;
    try {
      authority = await this.#getJson(this.#urls.context, { cache: "no-store" });
    } catch {
      authority = null;
    }
    check.running = false;
    if (this.#status.state === "closed" || this.#status.state === "auth_failed") return;
    if (authority === null || typeof authority !== "object" || !isRevision(authority.revision)) {
      // The edge cannot be asked now: the refused frames wait for a later check.
      check.failures += 1;
      if (check.failures < CHECK_ATTEMPTS) {
        this.#scheduleCheck(Math.min(30_000, 1_000 * 2 ** (check.failures - 1)));
      }
      return;
    }
    check.failures = 0;
    const refused = check.refused;
    check.refused = { context: null, tokens: null };
    const sessionId = this.sessionId;
    const frame = (data) => ({ type: "context_update", session_id: sessionId, data, timestamp: Date.now() / 1000 });

    // Context: the authority's revision is the truth, even when lower than what is held.
    const now = this.#held.context;
    const nowRevision = isRevision(now?.revision) ? now.revision : null;
    const wentBack = heldRevision !== null && authority.revision < heldRevision;
    if (wentBack && nowRevision !== heldRevision) {
      // Something newer than the checked revision arrived during the read: check that too.
      check.refused = refused;
      this.#scheduleCheck(this.#options.checkDebounceMs);
      return;
    }
    if (nowRevision === null || authority.revision !== nowRevision) {
      if (wentBack || nowRevision === null || authority.revision > nowRevision) {
        this.#take("context", authority, frame(authority));
      }
    }
    const late = refused.context;
    if (late && late.data.revision > authority.revision && late.data.revision < (nowRevision ?? Infinity)) {
      // Refused while the held revision was wrong, and newer than the authority's read: it is the latest.
      this.#take("context", late.data, late);
    }

    // Drafts: taken after the check, unless the held one is this client's own count and nothing reset.
    const draft = refused.tokens;
    if (draft) {
      const heldDraft = this.#held.tokens;
      const own = heldDraft !== null && heldDraft.revision === this.#ownDraftRevision;
      const stillOlder = heldDraft && isRevision(heldDraft.revision) && draft.data.revision < heldDraft.revision;
      if (stillOlder && (wentBack || !own)) this.#take("tokens", draft.data, draft);
    }
    if (check.again) this.#scheduleCheck(this.#options.checkDebounceMs);
  }

  // -- internals: sockets -------------------------------------------------------------------

  /** No socket, none being opened and no retry waiting. */
  #idle() {
    return this.#socket === null && !this.#opening && this.#retryTimer === null;
  }

  async #open() {
    if (this.#stopped) return;
    this.#retryTimer = null;
    this.#setStatus(this.#attempt > 0 ? { state: "connecting", attempt: this.#attempt } : { state: "connecting" });
    let token = this.#token;
    if (this.#options.getToken) {
      const generation = this.#generation;
      this.#opening = true;
      try {
        token = await this.#freshToken();
      } catch (error) {
        if (this.#stopped || generation !== this.#generation) return;
        this.#opening = false;
        this.#emit("error", error);
        this.#scheduleReconnect({ code: 0, reason: "token_unavailable" });
        return;
      }
      if (this.#stopped || generation !== this.#generation) return;
      this.#opening = false;
    }
    let socket;
    try {
      socket = new WebSocket(endpoints({ ...this.#options, token }).socket);
    } catch (error) {
      // Only a malformed URL throws here; retrying would not help.
      this.#stopped = true;
      this.#setStatus({ state: "closed", reason: "invalid_url", message: String(error?.message ?? error) });
      return;
    }
    this.#socket = socket;
    this.#socketToken = token;
    this.#attach(socket, token);
  }

  /** The socket's handlers; `socket` is the current socket, or a standby opened by a renewal. */
  #attach(socket, token) {
    let opened = false;
    socket.onopen = () => {
      opened = true;
      if (socket !== this.#socket) return; // a standby: it takes over on its first frame
      this.#snapshotDue = { context: true, tokens: true };
      this.#switchDue = { context: false, tokens: false };
      this.#startHeartbeat(socket);
      this.#setStatus({ state: "open" });
      this.#scheduleRenewal(token);
    };
    socket.onmessage = (event) => {
      if (socket === this.#standby) this.#switchTo(socket, token);
      if (socket !== this.#socket || typeof event.data !== "string") return;
      if (this.receive(event.data)) this.#attempt = 0; // the connection works: back off from scratch next time
    };
    socket.onerror = () => {
      // Always followed by "close", which decides what to do.
    };
    socket.onclose = (event) => {
      if (socket === this.#standby) {
        this.#standby = null;
        this.#standbyFailed({ opened, code: event.code, reason: event.reason, token });
        return;
      }
      if (socket !== this.#socket) return;
      this.#socket = null;
      this.#stopHeartbeat();
      this.#lost({ opened, code: event.code, reason: event.reason, token });
    };
  }

  /** Forget the current socket and any standby (their late events are ignored) and close them. */
  #dropSocket(code, reason) {
    const socket = this.#socket;
    const standby = this.#standby;
    this.#socket = null;
    this.#standby = null;
    clearTimeout(this.#renewTimer);
    this.#renewTimer = null;
    this.#stopHeartbeat();
    closeQuietly(socket, code, reason);
    closeQuietly(standby, code, reason);
  }

  async #lost({ opened, code, reason, token }) {
    if (this.#stopped) return;
    clearTimeout(this.#renewTimer);
    this.#renewTimer = null;
    const standby = this.#standby;
    this.#standby = null;
    closeQuietly(standby, 1000, "replaced");
    // The edge closes an open socket with 1008 "token expired" when the token runs out.
    const tokenClose = code === 1008 && /token/i.test(reason);
    if (AUTH_CLOSE_CODES.has(code) || tokenClose) {
      if (tokenClose && this.#options.getToken && (await this.#laterToken(token))) {
        if (this.#stopped || !this.#idle()) return;
        this.#scheduleReconnect({ code, reason });
        return;
      }
      if (this.#stopped) return;
      this.#authFailed(code === 4403 ? 403 : 401, { message: reason || "the token no longer grants this session" });
      return;
    }
    if (!opened) {
      const refusal = await this.#preflight(token);
      if (this.#stopped || !this.#idle()) return;
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

  /** Whether getToken now gives a token that expires later than `expired` (worth one more connect). */
  async #laterToken(expired) {
    try {
      const token = await this.#freshToken();
      const before = tokenExpiry(expired);
      const after = tokenExpiry(token);
      return token !== expired && (before === null || (after !== null && after > before));
    } catch (error) {
      if (!this.#stopped) this.#emit("error", error);
      return false;
    }
  }

  /** Why the edge refuses this session over HTTP, or null when it does not (or cannot be reached). */
  async #preflight(token) {
    try {
      const response = await this.#fetch(this.#urls.context, { method: "GET", cache: "no-store" }, token);
      if (response.ok) return null;
      return await errorFrom(response);
    } catch {
      return null; // unreachable: the edge is down, keep retrying
    }
  }

  #authFailed(httpStatus, { code, message }) {
    this.#stopped = true;
    this.#dropSocket(1000, "auth failed");
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

  // -- internals: tokens --------------------------------------------------------------------

  /** A token from getToken(); concurrent callers share one call. */
  #freshToken() {
    this.#tokenRequest ??= (async () => {
      try {
        let token;
        try {
          token = await this.#options.getToken();
        } catch (error) {
          throw new CtxMeterError("token_unavailable", `getToken() failed: ${error?.message ?? error}`);
        }
        if (typeof token !== "string" || token === "") {
          throw new CtxMeterError("token_unavailable", "getToken() must give a non-empty string");
        }
        this.#token = token;
        return token;
      } finally {
        this.#tokenRequest = null;
      }
    })();
    return this.#tokenRequest;
  }

  /** The token for an HTTP call: the current one, or a fresh one when it has run out (or there is none). */
  async #httpToken() {
    if (!this.#options.getToken) return this.#token;
    const expiry = tokenExpiry(this.#token);
    if (this.#token && (expiry === null || expiry - Date.now() > 1_000)) return this.#token;
    return this.#freshToken();
  }

  #scheduleRenewal(token) {
    clearTimeout(this.#renewTimer);
    this.#renewTimer = null;
    if (!this.#options.getToken || this.#stopped) return;
    const claims = tokenClaims(token);
    const expiry = claimMs(claims, "exp");
    if (expiry === null) return; // not a JWT with exp: nothing says when it ends
    let now = Date.now();
    const issued = claimMs(claims, "iat");
    if (issued !== null && issued < expiry && (now >= expiry || now < issued)) {
      // This machine's clock disagrees with the issuer's (the token the edge just took looks expired, or
      // not yet issued): count its life from its issue instead, or every renewal would look overdue.
      now = issued;
    }
    this.#renewTimer = setTimeout(() => this.#renew(), renewDelay(expiry, now, this.#options.renew));
  }

  /** A renewal could not be made now: keep the current socket and try again later, backing off. */
  #renewLater() {
    clearTimeout(this.#renewTimer);
    this.#renewTimer = null;
    if (this.#stopped || this.#socket === null) return;
    this.#renewFailures += 1;
    const { minMs, capMs } = this.#options.renew;
    let delay = Math.min(capMs, minMs * 2 ** (this.#renewFailures - 1));
    const expiry = tokenExpiry(this.#socketToken);
    // Before the current token runs out, if that is sooner (never sooner than minMs).
    if (expiry !== null) delay = Math.max(minMs, Math.min(delay, (expiry - Date.now()) / 2));
    this.#renewTimer = setTimeout(() => this.#renew(), delay);
  }

  async #renew() {
    this.#renewTimer = null;
    const current = this.#socket;
    if (this.#stopped || current === null || current.readyState !== 1 || this.#standby !== null) return;
    let token;
    try {
      token = await this.#freshToken();
    } catch (error) {
      if (this.#stopped || this.#socket !== current) return;
      this.#emit("error", error);
      this.#renewLater();
      return;
    }
    if (this.#stopped || this.#socket !== current || this.#standby !== null) return;
    const before = tokenExpiry(this.#socketToken);
    const after = tokenExpiry(token);
    if (token === this.#socketToken || (before !== null && after !== null && after <= before)) {
      this.#renewLater(); // nothing newer to switch to yet
      return;
    }
    let standby;
    try {
      standby = new WebSocket(endpoints({ ...this.#options, token }).socket);
    } catch {
      this.#renewLater();
      return;
    }
    this.#standby = standby;
    this.#attach(standby, token);
    // A standby that neither opens nor fails (a stalled network) must not hold up later renewals.
    setTimeout(() => {
      if (standby !== this.#standby) return;
      this.#standby = null;
      closeQuietly(standby, 1000, "renewal timed out");
      this.#renewLater();
    }, this.#options.requestTimeoutMs);
  }

  /** The renewed socket's first frame: it becomes the current socket, and the old one is closed. */
  #switchTo(socket, token) {
    const old = this.#socket;
    this.#standby = null;
    this.#socket = socket;
    this.#socketToken = token;
    this.#renewFailures = 0;
    // Its first frames are the session's state, which the old socket may have delivered already.
    this.#snapshotDue = { context: false, tokens: false };
    this.#switchDue = { context: true, tokens: true };
    this.#startHeartbeat(socket);
    closeQuietly(old, 1000, "token renewed");
    this.#scheduleRenewal(token);
  }

  async #standbyFailed({ opened, code, reason, token }) {
    if (this.#stopped || this.#socket === null) return;
    const tokenClose = AUTH_CLOSE_CODES.has(code) || (code === 1008 && /token/i.test(reason));
    const refusal = tokenClose ? null : opened ? null : await this.#preflight(token);
    if (this.#stopped || this.#socket === null) return;
    if (tokenClose) {
      this.#authFailed(code === 4403 ? 403 : 401, { message: reason || "the renewed token was refused" });
    } else if (refusal && (refusal.status === 401 || refusal.status === 403)) {
      this.#authFailed(refusal.status, refusal);
    } else {
      this.#renewLater();
    }
  }

  // -- internals: HTTP ------------------------------------------------------------------------

  async #fetch(url, init, token) {
    const headers = { Accept: "application/json", ...(init.headers ?? {}) };
    const bearer = token === undefined ? await this.#httpToken() : token;
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    const signal = AbortSignal.timeout?.(this.#options.requestTimeoutMs);
    return fetch(url, { ...init, headers, signal });
  }

  /** GET `url` with the current token: its JSON, or a CtxMeterError. */
  async #getJson(url, init = {}) {
    let response;
    try {
      response = await this.#fetch(url, { method: "GET", ...init });
    } catch (error) {
      throw requestError(error);
    }
    if (!response.ok) throw await errorFrom(response);
    return response.json();
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
        throw requestError(error);
      }
      if (!response.ok) throw await errorFrom(response);
      const usage = await response.json();
      // The functions' own reply: the draft this client counted (a revision it can vouch for).
      if (isRevision(usage?.revision)) this.#ownDraftRevision = usage.revision;
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
