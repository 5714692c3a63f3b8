// Type declarations for ctxmeter.js, the browser client of ctxmeter's WebSocket edge.
// Payload shapes come from ctxmeter-schemas.d.ts, generated from the JSON Schemas (schemas/json/).

import type {
  ContextHistory,
  ContextLevel,
  ContextUpdateEvent,
  ContextUsage,
  Encoding,
  HistoryOp,
  HistoryPoint,
  ModelInfo,
  ModelsReply,
  TokenCountEvent,
  TokenUsage,
  WindowSource,
} from "./ctxmeter-schemas.js";

// The payloads are generated from the contract's JSON Schema (ctxmeter-schemas.d.ts).
export type {
  ContextHistory,
  ContextUpdateEvent,
  ContextUsage,
  Encoding,
  HistoryOp,
  HistoryPoint,
  ModelInfo,
  ModelsReply,
  TokenCountEvent,
  TokenUsage,
  WindowSource,
};
export type Level = ContextLevel;
/** A `context_update` frame: a session's ContextUsage (GET/POST /api/counters/context/<sid> return the same). */
export type ContextUpdateFrame = ContextUpdateEvent;
/** A `token_count` frame: a session's draft count (POST /api/counters/tokens/<sid> returns its TokenUsage). */
export type TokenCountFrame = TokenCountEvent;

export interface PongFrame {
  type: "pong";
}

export type Frame = ContextUpdateFrame | TokenCountFrame | PongFrame;

export type Status =
  | { state: "idle" }
  /** `attempt` is present when this is a reconnect attempt. */
  | { state: "connecting"; attempt?: number }
  | { state: "open" }
  /** Waiting `delayMs` (full jitter, at most `ceilingMs`) before attempt `attempt`. */
  | { state: "reconnecting"; attempt: number; delayMs: number; ceilingMs: number; code?: number; reason?: string }
  /** `reason`: "client" (close() was called), "gave_up" (maxAttempts reached), "invalid_url", or the edge's error code. */
  | { state: "closed"; reason: string; attempt?: number; code?: number; httpStatus?: number; message?: string }
  /** The edge refused the token (401) or the session (403); the client does not retry until connect() is called. */
  | { state: "auth_failed"; httpStatus: 401 | 403; code: string; message: string };

export type StatusState = Status["state"];

export interface ReconnectOptions {
  /** Ceiling of the first delay, in ms (default 500). */
  baseMs?: number;
  /** Largest ceiling, in ms (default 30,000). */
  capMs?: number;
  /** Attempts before giving up (default Infinity; 5 is the seed's behaviour). */
  maxAttempts?: number;
}

/** When a token from getToken() is renewed: see renewDelay. */
export interface RenewOptions {
  /** Renew at this share of the remaining life (default 0.8)... */
  share?: number;
  /** ...or this many ms before expiry (default 30,000), whichever is sooner (never before half the life). */
  leadMs?: number;
  /** The shortest wait before a renewal, and the first retry delay after a failed one, ms (default 1,000). */
  minMs?: number;
  /** The longest retry delay after failed renewals, ms (default 60,000). */
  capMs?: number;
}

/** Gives a (JWT) token; called before each connect and before the current token expires. */
export type TokenSource = () => string | Promise<string>;

export interface CtxMeterOptions {
  /** 1–128 characters of A-Z a-z 0-9 _ -. */
  sessionId: string;
  /** The edge's base URL (http, https, ws or wss; a path prefix is kept). Default: the page's origin. */
  url?: string;
  /** A JWT when the edge requires one: sent as `?token=` on the socket and `Authorization: Bearer` on HTTP. */
  token?: string;
  /**
   * Tokens that expire: called before each connect and again before the current token's `exp`; the socket
   * is renewed without a gap (the new socket takes over on its first frame). Takes precedence over `token`.
   */
  getToken?: TokenSource;
  renew?: RenewOptions;
  /** Default model for countDraft. */
  model?: string;
  reconnect?: ReconnectOptions;
  /** Application ping interval, ms (default 30,000). */
  pingIntervalMs?: number;
  /** Reconnect when no pong arrives within this many ms of a ping (default 10,000). */
  pongTimeoutMs?: number;
  /** Pause before a draft count request, ms (default 300). */
  debounceMs?: number;
  /** Pause before asking the edge about a frame older than the one held, ms (default 100). */
  checkDebounceMs?: number;
  /** Timeout of HTTP requests, ms (default 15,000). */
  requestTimeoutMs?: number;
  /** Connect on the next microtask (default true); false: call connect() yourself. */
  autoConnect?: boolean;
}

export interface DraftOptions {
  model?: string;
  /** The limit to measure against; default: the model's context window. */
  max?: number;
  /** Send now instead of after the pause. */
  immediate?: boolean;
}

export interface Endpoints {
  socket: string;
  context: string;
  draft: string;
  history: string;
  models: string;
}

export interface HistoryOptions {
  /** Newest points to return, 1–1000 (default 200). */
  limit?: number;
}

export interface EventMap {
  context: (usage: ContextUsage, frame: ContextUpdateFrame) => void;
  tokens: (usage: TokenUsage, frame: TokenCountFrame) => void;
  status: (status: Status) => void;
  error: (error: CtxMeterError) => void;
}

export const SESSION_ID_PATTERN: RegExp;

export const DEFAULTS: Readonly<{
  reconnect: Readonly<Required<ReconnectOptions>>;
  renew: Readonly<Required<RenewOptions>>;
  pingIntervalMs: number;
  pongTimeoutMs: number;
  debounceMs: number;
  checkDebounceMs: number;
  requestTimeoutMs: number;
}>;

export class CtxMeterError extends Error {
  readonly name: "CtxMeterError";
  /** The edge's error code, or the client's: "network", "timeout", "closed", "token_unavailable". */
  readonly code: string;
  /** The HTTP status; 0 without a response. */
  readonly status: number;
  constructor(code: string, message: string, status?: number);
}

export class CtxMeter {
  constructor(options: CtxMeterOptions);
  readonly sessionId: string;
  readonly options: Readonly<Required<Omit<CtxMeterOptions, OptionalOption>>> &
    Readonly<Pick<CtxMeterOptions, OptionalOption>>;
  readonly status: Status;
  /** The latest context usage, or null before the first frame. */
  readonly context: ContextUsage | null;
  /** The latest draft count of the session, or null when none is known. */
  readonly tokens: TokenUsage | null;
  /** True while a draft count waits for its pause or its reply. */
  readonly draftPending: boolean;
  /** True while a revision check (after a frame older than the one held) waits for its pause or reply. */
  readonly checkPending: boolean;
  /** Returns a function that removes the listener. */
  on<K extends keyof EventMap>(kind: K, listener: EventMap[K]): () => void;
  /** Start (or restart after close() or auth_failed) following the session. */
  connect(): this;
  /** Stop: close the socket, cancel timers, reject a pending draft count with code "closed". */
  close(): void;
  /** Debounced draft count: the calls of one pause share one request and one promise. */
  countDraft(text: string, options?: DraftOptions): Promise<TokenUsage>;
  /** The session's recent changes, oldest first (the last point is the current state). */
  history(options?: HistoryOptions): Promise<ContextHistory>;
  /** The models the edge knows, with their context windows. */
  models(): Promise<ModelsReply>;
  /**
   * Feed a frame as the edge sends it; true when applied (false: unknown, malformed or older — an older
   * frame makes the client check the held revision with the edge, and take the edge's state if lower).
   */
  receive(frame: string | Frame): boolean;
}

/** Options without a default: absent unless given. */
type OptionalOption = "url" | "token" | "getToken" | "model" | "autoConnect";

export function connect(sessionId: string, options?: Omit<CtxMeterOptions, "sessionId">): CtxMeter;
export function endpoints(options: Pick<CtxMeterOptions, "url" | "sessionId" | "token">, base?: string): Endpoints;
/** A JWT's `exp` claim in ms since the epoch; null when the token is not a JWT with an `exp`. */
export function tokenExpiry(token: string | null | undefined): number | null;
/** ms to wait before renewing a token that expires at `expMs` (see RenewOptions). */
export function renewDelay(expMs: number, nowMs: number, renew?: RenewOptions): number;
/** min(capMs, baseMs · 2^(attempt-1)) */
export function backoffCeiling(attempt: number, reconnect: Required<Pick<ReconnectOptions, "baseMs" | "capMs">>): number;
/** Full jitter: uniform in [0, backoffCeiling(attempt)). */
export function backoffDelay(
  attempt: number,
  reconnect: Required<Pick<ReconnectOptions, "baseMs" | "capMs">>,
  random?: () => number,
): number;
