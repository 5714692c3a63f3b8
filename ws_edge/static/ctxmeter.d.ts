// Type declarations for ctxmeter.js, the browser client of ctxmeter's WebSocket edge.
// Payload shapes follow schemas/models.py (the JSON Schemas under schemas/json/).

export type Level = "normal" | "warning" | "critical";
export type Encoding = "o200k_base" | "cl100k_base";

/** A session's context window usage (`context_update` frames, GET/POST /api/counters/context/<sid>). */
export interface ContextUsage {
  session_id: string;
  used: number;
  total: number;
  /** 0–100, rounded to 2 decimals. */
  percentage: number;
  /** normal < 80 %, warning 80–89.99 %, critical ≥ 90 % (the edge's configured thresholds). */
  level: Level;
  model: string | null;
  /** The KV revision: the client drops anything older than what it holds. */
  revision: number;
  /** RFC 3339, UTC. */
  updated_at: string;
}

/** A session's draft message count (`token_count` frames, POST /api/counters/tokens/<sid>). */
export interface TokenUsage {
  session_id: string;
  count: number;
  max: number;
  percentage: number;
  /** True from 80 %. */
  warning: boolean;
  /** normal, warning ≥ 80 %, critical ≥ 95 %. */
  level: Level;
  model: string | null;
  encoding: Encoding;
  /** True when the encoding is the model's own tokenizer. */
  exact: boolean;
  revision: number;
  updated_at: string;
}

export interface ContextUpdateFrame {
  type: "context_update";
  session_id: string;
  data: ContextUsage;
  /** Unix seconds. */
  timestamp: number;
}

export interface TokenCountFrame {
  type: "token_count";
  session_id: string;
  data: TokenUsage;
  timestamp: number;
}

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

export interface CtxMeterOptions {
  /** 1–128 characters of A-Z a-z 0-9 _ -. */
  sessionId: string;
  /** The edge's base URL (http, https, ws or wss; a path prefix is kept). Default: the page's origin. */
  url?: string;
  /** A JWT when the edge requires one: sent as `?token=` on the socket and `Authorization: Bearer` on HTTP. */
  token?: string;
  /** Default model for countDraft. */
  model?: string;
  reconnect?: ReconnectOptions;
  /** Application ping interval, ms (default 30,000). */
  pingIntervalMs?: number;
  /** Reconnect when no pong arrives within this many ms of a ping (default 10,000). */
  pongTimeoutMs?: number;
  /** Pause before a draft count request, ms (default 300). */
  debounceMs?: number;
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
  pingIntervalMs: number;
  pongTimeoutMs: number;
  debounceMs: number;
  requestTimeoutMs: number;
}>;

export class CtxMeterError extends Error {
  readonly name: "CtxMeterError";
  /** The edge's error code, or the client's: "network", "timeout", "closed". */
  readonly code: string;
  /** The HTTP status; 0 without a response. */
  readonly status: number;
  constructor(code: string, message: string, status?: number);
}

export class CtxMeter {
  constructor(options: CtxMeterOptions);
  readonly sessionId: string;
  readonly options: Readonly<Required<Omit<CtxMeterOptions, "url" | "token" | "model" | "autoConnect">>> &
    Readonly<Pick<CtxMeterOptions, "url" | "token" | "model" | "autoConnect">>;
  readonly status: Status;
  /** The latest context usage, or null before the first frame. */
  readonly context: ContextUsage | null;
  /** The latest draft count of the session, or null when none is known. */
  readonly tokens: TokenUsage | null;
  /** True while a draft count waits for its pause or its reply. */
  readonly draftPending: boolean;
  /** Returns a function that removes the listener. */
  on<K extends keyof EventMap>(kind: K, listener: EventMap[K]): () => void;
  /** Start (or restart after close() or auth_failed) following the session. */
  connect(): this;
  /** Stop: close the socket, cancel timers, reject a pending draft count with code "closed". */
  close(): void;
  /** Debounced draft count: the calls of one pause share one request and one promise. */
  countDraft(text: string, options?: DraftOptions): Promise<TokenUsage>;
  /** Feed a frame as the edge sends it; true when applied (false: unknown, malformed or older). */
  receive(frame: string | Frame): boolean;
}

export function connect(sessionId: string, options?: Omit<CtxMeterOptions, "sessionId">): CtxMeter;
export function endpoints(options: Pick<CtxMeterOptions, "url" | "sessionId" | "token">, base?: string): Endpoints;
/** min(capMs, baseMs · 2^(attempt-1)) */
export function backoffCeiling(attempt: number, reconnect: Required<Pick<ReconnectOptions, "baseMs" | "capMs">>): number;
/** Full jitter: uniform in [0, backoffCeiling(attempt)). */
export function backoffDelay(
  attempt: number,
  reconnect: Required<Pick<ReconnectOptions, "baseMs" | "capMs">>,
  random?: () => number,
): number;
