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
  /** Tokens kept free for the model's reply (0 when no policy is set). */
  reserved: number;
  /** The `used` at which the agent compacts (`total - reserved` unless set). */
  compact_at: number;
  /** Tokens left before the agent compacts: max(0, compact_at - used). */
  left: number;
  /** True when `used` includes add/free estimates since the last provider usage report (or exact set). */
  estimated: boolean;
  /** Compactions recorded for this session. */
  compactions: number;
  /** RFC 3339 time of the last compaction, or null before the first. */
  compacted_at: string | null;
  /**
   * Reasoning (thinking) tokens of the last reported response, shown beside `used`: counted in it only when
   * the model keeps its reasoning in context; null when the provider does not report them apart. Absent
   * from servers before it.
   */
  reasoning?: number | null;
  /**
   * Where `total` comes from: the model's window, a total the caller reported, or the default window (a
   * guess to show as one). Absent from servers before it.
   */
  window_source?: WindowSource;
}

/** Where a session's window (`total`) comes from. */
export type WindowSource = "model" | "reported" | "default";

export type HistoryOp = "set" | "add" | "free" | "usage" | "reset" | "compact";

/** One change of a session's context (GET /api/counters/context/<sid>/history). */
export interface HistoryPoint {
  /** RFC 3339, UTC. */
  at: string;
  op: HistoryOp;
  used: number;
  total: number;
  compact_at: number;
  revision: number;
}

export interface ContextHistory {
  session_id: string;
  /** Oldest first; the last point is the current state. */
  points: HistoryPoint[];
}

/** A model the edge knows (GET /api/counters/models). */
export interface ModelInfo {
  name: string;
  aliases: string[];
  encoding: Encoding;
  context_window: number;
  /** Most tokens one reply may have; null when not published. */
  max_output: number | null;
  /** True when the encoding is the model's own tokenizer. */
  exact: boolean;
}

export interface ModelsReply {
  models: ModelInfo[];
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
