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

/** A server URL without its user and password. */
function withoutCredentials(url) {
  return String(url).replace(/\/\/[^/@]*@/, "//");
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

function isThenable(value) {
  return value !== null && (typeof value === "object" || typeof value === "function") && typeof value.then === "function";
}

/** `value`, awaited when it is a promise (a streamText result's `usage`, `steps`, `response`). */
async function settled(value) {
  return isThenable(value) ? await value : value;
}

// A run's total usage sums several requests: never the context's size. What to report instead.
const RUN_TOTAL_HELP =
  "report the last response's usage instead (Vercel AI SDK: result.usage or the last step's usage; " +
  "OpenAI Agents SDK: result.rawResponses.at(-1).usage), or the response itself";

/**
 * What a Vercel AI SDK result or step (generateText, streamText, onFinish, onStepFinish) stands for: its last
 * step, with the provider's own usage where the AI SDK keeps it (AI SDK 5 counts Anthropic's cache and
 * Gemini's thoughts outside its own fields), and the model id. Null for anything else.
 */
async function vercelStep(value) {
  const steps = await settled(value.steps);
  const step = Array.isArray(steps) && steps.length > 0 ? steps[steps.length - 1] : value;
  const usage = await settled(step.usage);
  if (!isObject(usage) || !("inputTokens" in usage || "outputTokens" in usage || "promptTokens" in usage)) {
    return null;
  }
  const metadata = await settled(step.providerMetadata);
  const raw = isObject(metadata?.anthropic?.usage)
    ? metadata.anthropic.usage
    : isObject(metadata?.google?.usageMetadata)
      ? metadata.google.usageMetadata
      : usage;
  const response = await settled(step.response);
  const model = typeof response?.modelId === "string" ? response.modelId : undefined;
  return { usage: raw, model };
}

/**
 * What `report` sends for what a runtime has in hand: a response (OpenAI Chat Completions or Responses,
 * Anthropic, Gemini, LangChain.js AIMessage), a stream event carrying usage (the last chunk; OpenAI
 * `response.completed`; Anthropic `message_start` then `message_delta`), a Vercel AI SDK result or step, or a
 * usage object; SDK objects or plain objects, snake or camel case. Resolves to `{usage, model?, continues?}`.
 */
export async function usageOf(responseOrUsage) {
  if (!isObject(responseOrUsage)) throw invalid("report needs a response, a stream event or a usage object");
  let source = responseOrUsage;
  const extra = {};
  if (source.type === "message_start" && isObject(source.message)) source = source.message;
  else if (source.type === "message_delta") extra.continues = true;
  else if (typeof source.type === "string" && source.type.startsWith("response.") && isObject(source.response)) {
    source = source.response;
  }
  if ("totalUsage" in source && !("usage" in source) && !("steps" in source)) {
    throw invalid(`this object holds totalUsage only, a sum over several model requests, not the context's size; ${RUN_TOTAL_HELP}`);
  }
  if ("steps" in source || "totalUsage" in source || isThenable(source.usage)) {
    const step = await vercelStep(source);
    if (step !== null) return { usage: withoutNullish(step.usage), model: step.model, ...extra };
  }
  const model = modelOf(source);
  for (const field of USAGE_FIELDS) {
    if (!(field in source)) continue;
    const usage = source[field];
    if (usage === null || usage === undefined) {
      // A streamed chunk before the last one, or a request made without usage reporting: say so, rather
      // than send the response itself and get a vaguer invalid_request back.
      throw invalid(
        `this response has no usage (${field} is ${usage}); report the response or event that carries it ` +
          "(the last chunk of a stream; OpenAI Chat Completions streams: stream_options: {include_usage: true})",
      );
    }
    if (!isObject(usage)) throw invalid(`the response's ${field} is not an object`);
    return { usage: withoutNullish(usage), model, ...extra };
  }
  return { usage: withoutNullish(source), model: undefined, ...extra };
}

/** The model a response names: OpenAI and Anthropic `model`, Gemini `modelVersion`, LangChain.js metadata. */
function modelOf(response) {
  for (const field of MODEL_FIELDS) {
    const candidate = response[field];
    if (typeof candidate === "string" && candidate.length > 0) return candidate;
  }
  for (const field of ["model_name", "model"]) {
    const candidate = response.response_metadata?.[field];
    if (typeof candidate === "string" && candidate.length > 0) return candidate;
  }
  return undefined;
}

/** A constructor name a developer knows an object by, for error messages. */
function typeName(value) {
  const name = Object.getPrototypeOf(value)?.constructor?.name;
  return name && name !== "Object" ? name : "plain object";
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
    let nc;
    try {
      nc = await connect({ ...natsOptions, ...(servers === undefined ? {} : { servers }) });
    } catch (error) {
      if (!(error instanceof natsErrors.ConnectionError || error instanceof natsErrors.TimeoutError)) throw error;
      const shown = [servers ?? natsOptions.servers ?? "127.0.0.1:4222"].flat().map(withoutCredentials).join(", ");
      throw new CtxMeterError(
        "unavailable",
        `no NATS server answers at ${shown} (${error.message}): start ctxmeter there (\`ctxmeter up\`) ` +
          "or pass your deployment's NATS URL",
        { cause: error },
      );
    }
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
   * Sets the context used from a model response's usage (see usageOf): what the next request carries of it.
   * `model` sizes the window; when omitted, the model the response names is sent, if it names one.
   */
  async report(sessionId, responseOrUsage, options = {}) {
    checkSessionId(sessionId);
    const { usage, model: named, continues } = await usageOf(responseOrUsage);
    const model = options.model ?? named;
    const body = { usage, ...(model === undefined ? {} : { model }), ...(continues ? { continues: true } : {}) };
    try {
      return await this.#context("usage", sessionId, body, options, true);
    } catch (error) {
      if (error instanceof CtxMeterError && error.code === "invalid_request" && error.message.startsWith("usage")) {
        // The server saw fields; the developer knows the object by its type.
        error.message = `${error.message} (reported object: ${typeName(responseOrUsage)})`;
      }
      throw error;
    }
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
