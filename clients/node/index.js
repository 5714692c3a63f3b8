// ctxmeter-client: report an agent session's context usage to ctxmeter over NATS.
//
// One class, CtxMeter, with one method per request/reply subject of the ctxmeter contract. Every call
// retries what is worth retrying (no responders, timeouts, `conflict`, `internal`) with full-jitter
// exponential backoff until a deadline; every state-changing call carries one idempotency key
// (`Nats-Msg-Id`) on all of its attempts, so a retry never applies a change twice.

import { randomUUID } from "node:crypto";
import { connect, errors as natsErrors, headers as natsHeaders, Match } from "@nats-io/transport-node";

export const SESSION_ID_PATTERN = "^[A-Za-z0-9_-]{1,128}$";
const SESSION_ID_RE = new RegExp(SESSION_ID_PATTERN);
// 1-128 printable ASCII characters. No CR/LF: a header value with one would end the header early.
const IDEMPOTENCY_KEY_RE = /^[\x20-\x7e]{1,128}$/;

export const IDEMPOTENCY_HEADER = "Nats-Msg-Id";
export const DUPLICATE_HEADER = "Ctxmeter-Duplicate";
const ERROR_CODE_HEADER = "Nats-Service-Error-Code";
const ERROR_HEADER = "Nats-Service-Error";

// Input errors: the same request can never succeed, so they are thrown at once.
export const INPUT_ERRORS = Object.freeze([
  "invalid_json",
  "invalid_request",
  "invalid_session_id",
  "unknown_model",
  "payload_too_large",
]);
// Worth another attempt: the functions are not there yet (no responders, timeouts: `unavailable`), the
// session's key is too contended right now, or a function failed in passing.
export const RETRYABLE_ERRORS = Object.freeze(["unavailable", "conflict", "internal"]);
const RETRYABLE = new Set(RETRYABLE_ERRORS);

// What a reply's micro status means when its body carries no code (it always should).
const STATUS_CODES = {
  400: "invalid_request",
  404: "unknown_model",
  409: "conflict",
  413: "payload_too_large",
  507: "store_full",
};

// The shortest wait for a reply, even when the deadline has (nearly) passed: an attempt given a
// millisecond would time out on any loaded machine and hide the server's answer (as the Python client).
const LAST_ATTEMPT_MS = 50;

const DEFAULTS = Object.freeze({
  deadline: 10_000,
  attemptTimeout: 3_000,
  backoffInitial: 50,
  backoffMax: 1_000,
});

// Where a response keeps its usage (OpenAI and Anthropic `usage`, Gemini `usageMetadata`, or
// `usage_metadata` in snake case) and names its model. An object with none of these is the usage itself.
const USAGE_FIELDS = ["usage", "usageMetadata", "usage_metadata"];
const MODEL_FIELDS = ["model", "modelVersion", "model_version"];

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * An error ctxmeter answered, or the reason a call gave up. `code` is one of the contract's codes,
 * `attempts` how many requests the call sent (0 when it was refused before sending anything), `status`
 * the micro status of an error reply (400, 404, 409, 413, 500, 507).
 */
export class CtxMeterError extends Error {
  constructor(code, message, { status, cause, attempts = 0 } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "CtxMeterError";
    this.code = code;
    this.attempts = attempts;
    if (status !== undefined) this.status = status;
  }

  /** True for the codes the client retries by itself until its deadline. */
  get retryable() {
    return RETRYABLE.has(this.code);
  }
}

export function isSessionId(candidate) {
  return typeof candidate === "string" && SESSION_ID_RE.test(candidate);
}

function checkSessionId(sessionId) {
  if (!isSessionId(sessionId)) {
    // Quote only a short excerpt: the id may be anything a caller passed.
    const shown = typeof sessionId === "string" ? JSON.stringify(sessionId.slice(0, 40)) : typeof sessionId;
    throw new CtxMeterError(
      "invalid_session_id",
      `session id ${shown} is invalid: use 1-128 characters of A-Z a-z 0-9 _ -`,
    );
  }
  return sessionId;
}

function invalid(message) {
  return new CtxMeterError("invalid_request", message);
}

/** A copy of `object` without its null and undefined fields (the server reads absent as "not given"). */
function withoutNullish(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== null && value !== undefined));
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * The usage object in what a runtime has in hand: an OpenAI (Chat Completions or Responses), Anthropic
 * or Gemini response, or that response's usage itself; SDK objects or plain objects, snake or camel case.
 */
export function usageOf(responseOrUsage) {
  if (!isObject(responseOrUsage)) throw invalid("report needs a response or a usage object");
  for (const field of USAGE_FIELDS) {
    if (!(field in responseOrUsage)) continue;
    const usage = responseOrUsage[field];
    if (usage === null || usage === undefined) {
      // A streamed chunk before the last one, or a request made without usage reporting: say so, rather
      // than send the response itself and get a vaguer invalid_request back.
      throw invalid(
        `this response has no usage (${field} is ${usage}); report the response that carries it ` +
          "(OpenAI streams: stream_options: {include_usage: true})",
      );
    }
    if (!isObject(usage)) throw invalid(`the response's ${field} is not an object`);
    return withoutNullish(usage);
  }
  return withoutNullish(responseOrUsage);
}

/** The model a response names: OpenAI and Anthropic `model`, Gemini `modelVersion`. */
function modelOf(responseOrUsage) {
  for (const field of MODEL_FIELDS) {
    const candidate = responseOrUsage[field];
    if (typeof candidate === "string" && candidate.length > 0) return candidate;
  }
  return undefined;
}

// What a failed nats.js request means for ctxmeter: a CtxMeterError, and whether another attempt may help.
function transportFailure(error) {
  const fail = (code, message, retry) => ({ error: new CtxMeterError(code, message, { cause: error }), retry });
  // nats.js wraps request failures in a RequestError whose cause says what happened.
  const cause = error instanceof natsErrors.RequestError && error.cause ? error.cause : error;
  if (error instanceof natsErrors.RequestError && error.isNoResponders()) {
    return fail("unavailable", "no ctxmeter functions answer (no responders)", true);
  }
  if (cause instanceof natsErrors.TimeoutError) return fail("unavailable", "ctxmeter did not answer in time", true);
  if (cause instanceof natsErrors.ClosedConnectionError || cause instanceof natsErrors.DrainingConnectionError) {
    return fail("unavailable", "the NATS connection is closed", false); // it does not come back
  }
  if (cause instanceof natsErrors.PermissionViolationError) {
    return fail("forbidden", `NATS denied it: ${cause.message}`, false);
  }
  if (cause instanceof natsErrors.InvalidArgumentError && /max_payload/.test(cause.message)) {
    return fail("payload_too_large", "the request is larger than the NATS server accepts", false);
  }
  if (error instanceof natsErrors.RequestError) {
    // e.g. "connection disconnected" while the client reconnects: transient.
    return fail("unavailable", `NATS request failed: ${error.message}`, true);
  }
  return null;
}

/** The JSON body of a reply, or the CtxMeterError it carries. */
function decodeReply(msg) {
  const text = decoder.decode(msg.data);
  const status = msg.headers?.get(ERROR_CODE_HEADER, Match.IgnoreCase);
  if (status) {
    let detail;
    try {
      detail = JSON.parse(text)?.error;
    } catch {
      detail = undefined;
    }
    const statusNumber = Number(status);
    const code = typeof detail?.code === "string" ? detail.code : (STATUS_CODES[statusNumber] ?? "internal");
    const message =
      typeof detail?.message === "string"
        ? detail.message
        : msg.headers.get(ERROR_HEADER, Match.IgnoreCase) || `ctxmeter error ${status}`;
    throw new CtxMeterError(code, message, { status: statusNumber });
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new CtxMeterError("internal", `ctxmeter replied with something that is not JSON (${text.length} chars)`);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class CtxMeter {
  #nc;
  #ownsConnection = false;
  #options;

  /**
   * A meter on an existing NATS connection; `close()` leaves that connection open.
   * Options: `deadline` (ms a call keeps retrying, 10 000), `attemptTimeout` (ms one attempt waits for
   * its reply, 3 000), `backoffInitial` and `backoffMax` (ms, 50 and 1 000), `onRetry(info)`.
   */
  constructor(nc, options = {}) {
    if (!nc || typeof nc.request !== "function") throw new TypeError("CtxMeter needs a NATS connection");
    const merged = { ...DEFAULTS, ...withoutNullish(options) };
    for (const name of Object.keys(merged)) {
      // A misspelt option would otherwise be ignored without a word.
      if (!(name in DEFAULTS) && name !== "onRetry") throw new TypeError(`unknown CtxMeter option ${name}`);
    }
    for (const name of Object.keys(DEFAULTS)) {
      if (!(Number.isFinite(merged[name]) && merged[name] > 0)) {
        throw new TypeError(`option ${name} must be a positive number of milliseconds`);
      }
    }
    if (merged.onRetry !== undefined && typeof merged.onRetry !== "function") {
      throw new TypeError("option onRetry must be a function");
    }
    this.#nc = nc;
    this.#options = Object.freeze(merged);
  }

  /** Connects to NATS (`natsOptions` as @nats-io/transport-node's `connect` takes them) and owns that connection. */
  static async connect(servers, natsOptions = {}, options = {}) {
    const nc = await connect({ ...natsOptions, ...(servers === undefined ? {} : { servers }) });
    let meter;
    try {
      meter = new CtxMeter(nc, options);
    } catch (error) {
      await nc.close();
      throw error;
    }
    meter.#ownsConnection = true;
    return meter;
  }

  /** The NATS connection this meter uses. */
  get nc() {
    return this.#nc;
  }

  /** Closes the connection when `connect()` made it; a connection passed to the constructor stays open. */
  async close() {
    if (this.#ownsConnection && !this.#nc.isClosed()) await this.#nc.close();
  }

  // -- context --------------------------------------------------------------------------------

  get(sessionId, options = {}) {
    return this.#context("get", sessionId, {}, options, false);
  }

  set(sessionId, fields, options = {}) {
    if (!isObject(fields)) return Promise.reject(invalid("set needs an object such as {used, total}"));
    // Unknown fields are sent as given: the server rejects a typo such as "totl" instead of dropping it.
    return this.#context("set", sessionId, withoutNullish(fields), options, true);
  }

  add(sessionId, tokens, options = {}) {
    return this.#context("add", sessionId, { tokens }, options, true);
  }

  free(sessionId, tokens, options = {}) {
    return this.#context("free", sessionId, { tokens }, options, true);
  }

  reset(sessionId, options = {}) {
    return this.#context("reset", sessionId, {}, options, true);
  }

  compact(sessionId, used, options = {}) {
    return this.#context("compact", sessionId, { used }, options, true);
  }

  history(sessionId, options = {}) {
    return this.#context("history", sessionId, withoutNullish({ limit: options.limit }), options, false);
  }

  /**
   * Sets the context used from a provider's usage report (see usageOf). `model` sizes the window; when
   * omitted, the response's own model (`model`, Gemini `modelVersion`) is sent, if it names one.
   */
  async report(sessionId, responseOrUsage, options = {}) {
    checkSessionId(sessionId);
    const usage = usageOf(responseOrUsage);
    const model = options.model ?? modelOf(responseOrUsage);
    return this.#context("usage", sessionId, model === undefined ? { usage } : { usage, model }, options, true);
  }

  // -- tokens and models ----------------------------------------------------------------------

  /** Counts a text, or chat messages (with the OpenAI per-message overhead), without storing anything. */
  count(textOrMessages, options = {}) {
    let body;
    if (typeof textOrMessages === "string") body = { text: textOrMessages };
    else if (Array.isArray(textOrMessages)) {
      // Null fields dropped, as an SDK's message objects carry them (`name: null`).
      body = { messages: textOrMessages.map((message) => (isObject(message) ? withoutNullish(message) : message)) };
    } else return Promise.reject(invalid("count needs a text or an array of chat messages"));
    Object.assign(body, withoutNullish({ model: options.model, encoding: options.encoding }));
    return this.#request("ctxmeter.tokens.count", body, options, false);
  }

  /** Counts and stores a session's draft message (what a person is typing); browsers see it live. */
  async draft(sessionId, text, options = {}) {
    checkSessionId(sessionId);
    const body = { text, ...withoutNullish({ model: options.model, max: options.max }) };
    return this.#request(`ctxmeter.tokens.draft.${sessionId}`, body, options, true);
  }

  models(options = {}) {
    return this.#request("ctxmeter.models", {}, options, false);
  }

  // -- requests -------------------------------------------------------------------------------

  async #context(op, sessionId, body, options, changes) {
    checkSessionId(sessionId);
    return this.#request(`ctxmeter.context.${op}.${sessionId}`, body, options, changes);
  }

  #keyFor(options) {
    const key = options.idempotencyKey ?? randomUUID();
    if (typeof key !== "string" || !IDEMPOTENCY_KEY_RE.test(key)) {
      throw invalid("idempotencyKey must be 1-128 printable ASCII characters");
    }
    return key;
  }

  async #request(subject, body, options, changes) {
    const deadlineMs = options.deadline ?? this.#options.deadline;
    if (!(Number.isFinite(deadlineMs) && deadlineMs > 0)) throw new TypeError("deadline must be a positive number");
    const payload = encoder.encode(JSON.stringify(body));
    const maxPayload = this.#nc.info?.max_payload;
    if (maxPayload !== undefined && payload.length > maxPayload) {
      throw new CtxMeterError(
        "payload_too_large",
        `the request (${payload.length} bytes) is larger than the NATS server accepts (${maxPayload})`,
      );
    }
    let requestHeaders;
    if (changes) {
      // Made once per call, sent on every attempt: the functions apply a key at most once per session.
      requestHeaders = natsHeaders();
      requestHeaders.set(IDEMPOTENCY_HEADER, this.#keyFor(options));
    }
    const { attemptTimeout, backoffInitial, backoffMax, onRetry } = this.#options;
    const end = Date.now() + deadlineMs;
    for (let attempt = 1; ; attempt++) {
      let failure;
      let retry;
      try {
        const timeout = Math.min(attemptTimeout, Math.max(LAST_ATTEMPT_MS, end - Date.now()));
        const msg = await this.#nc.request(subject, payload, { timeout, headers: requestHeaders });
        const reply = decodeReply(msg);
        if (changes && isObject(reply)) {
          // Not enumerable: the reply stays exactly the contract's JSON object (for JSON.stringify, spreads).
          const duplicate = msg.headers?.get(DUPLICATE_HEADER, Match.IgnoreCase)?.toLowerCase() === "true";
          Object.defineProperty(reply, "duplicate", { value: duplicate, enumerable: false });
        }
        return reply;
      } catch (error) {
        if (error instanceof CtxMeterError) {
          failure = error;
          retry = RETRYABLE.has(error.code);
        } else {
          const known = transportFailure(error);
          if (known === null) throw error;
          ({ error: failure, retry } = known);
        }
      }
      if (retry) {
        // Full jitter: a random wait up to the exponential step, so many clients retrying do not stampede.
        const delay = Math.random() * Math.min(backoffMax, backoffInitial * 2 ** (attempt - 1));
        // No attempt would start before the deadline: give up now with this failure's code, not later.
        if (Date.now() + delay < end) {
          onRetry?.({ subject, attempt, code: failure.code, delay, error: failure });
          await sleep(delay);
          continue;
        }
      }
      failure.attempts = attempt;
      if (retry) failure.message = `${failure.message} (gave up after ${attempt} attempt${attempt === 1 ? "" : "s"} in ${deadlineMs} ms)`;
      throw failure;
    }
  }
}

export default CtxMeter;
