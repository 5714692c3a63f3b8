// The payloads of ctxmeter's contract, generated from its JSON Schema (schemas/json) by `ctxmeter schemas`
// (schemas/typescript.py). Do not edit: change schemas/models.py and run `ctxmeter schemas`.

/** Anthropic ``usage``, and OpenAI Responses ``usage`` (the same two counts; Responses has no cache fields, its cached tokens being inside ``input_tokens``). */
export interface AnthropicUsage {
  /** A token count; never negative. */
  input_tokens: number;
  output_tokens?: number | null;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
}

/** A chat message as sent to OpenAI's chat API; only text content can be counted. */
export interface ChatMessage {
  role: string;
  content?: string | Array<TextPart> | null;
  name?: string | null;
}

/** ``compact``: the agent compacted its context; ``used`` is its size now. */
export interface CompactRequest {
  /** A token count; never negative. */
  used: number;
}

export interface ContextHistory {
  /** 1-128 characters of A-Z a-z 0-9 _ -; it becomes a NATS subject token. */
  session_id: string;
  /** Oldest first; the last is the current state. */
  points: Array<HistoryPoint>;
}

export type ContextLevel = "normal" | "warning" | "critical";

export interface ContextSetRequest {
  /** A token count; never negative. */
  used: number;
  /** Kept as stored (or the model's window) when omitted. */
  total?: number | null;
  model?: string | null;
  /** Tokens kept free for the model's reply; kept as stored when omitted (0 at first). */
  reserved?: number | null;
  /** The used count at which the agent compacts; kept as stored when omitted (total - reserved). */
  compact_at?: number | null;
  /** True when `used` is the caller's estimate, not a count. */
  estimated?: boolean;
}

export interface ContextUpdateEvent {
  type: "context_update";
  /** 1-128 characters of A-Z a-z 0-9 _ -; it becomes a NATS subject token. */
  session_id: string;
  data: ContextUsage;
  /** Unix seconds when the event was published. */
  timestamp: number;
}

export interface ContextUsage {
  /** 1-128 characters of A-Z a-z 0-9 _ -; it becomes a NATS subject token. */
  session_id: string;
  /** A token count; never negative. */
  used: number;
  /** A context window in tokens; at least 1. */
  total: number;
  /** used / total, 0-100 (shown as 100 above the window). */
  percentage: number;
  /** From used / compact_at: normal, warning (80 %), critical (90 %). */
  level: ContextLevel;
  model: string | null;
  /** The KV revision of this state; 0 when nothing is stored yet. Drop anything older. */
  revision: number;
  /** RFC 3339 time of the last change, UTC. */
  updated_at: string;
  /** Tokens kept free for the model's reply. */
  reserved: number;
  /** The used count at which the agent compacts (total - reserved by default). */
  compact_at: number;
  /** Tokens left before the agent compacts: max(0, compact_at - used). */
  left: number;
  /** True when used includes add/free estimates since the last usage report. */
  estimated: boolean;
  /** Compactions recorded for this session. */
  compactions: number;
  /** When the last compaction was recorded. */
  compacted_at: string | null;
}

/** ``ctxmeter.tokens.draft.<sid>``: the message a person is typing. */
export interface DraftRequest {
  text: string;
  model?: string | null;
  /** The limit to measure against. */
  max?: number | null;
}

/** ``get`` and ``reset`` take no fields; an empty body is accepted too. */
export interface EmptyRequest {
}

export type Encoding = "o200k_base" | "cl100k_base";

export type ErrorCode = "invalid_json" | "invalid_request" | "invalid_session_id" | "unknown_model" | "payload_too_large" | "conflict" | "internal" | "store_full" | "unauthorized" | "forbidden" | "not_found" | "rate_limited" | "unavailable" | "unsupported_encoding";

export interface ErrorDetail {
  code: ErrorCode;
  message: string;
}

export interface ErrorReply {
  error: ErrorDetail;
}

/** Gemini ``usage_metadata`` (snake or camel case); cached content is inside the prompt count. */
export interface GeminiUsage {
  /** A token count; never negative. */
  promptTokenCount: number;
  candidatesTokenCount?: number | null;
  toolUsePromptTokenCount?: number | null;
}

/** The change a history point records. */
export type HistoryOp = "set" | "add" | "free" | "usage" | "reset" | "compact";

export interface HistoryPoint {
  /** RFC 3339 time of the last change, UTC. */
  at: string;
  op: HistoryOp;
  /** A token count; never negative. */
  used: number;
  /** A context window in tokens; at least 1. */
  total: number;
  /** A context window in tokens; at least 1. */
  compact_at: number;
  /** The KV revision of this state; 0 when nothing is stored yet. Drop anything older. */
  revision: number;
}

export interface HistoryRequest {
  /** Newest points to return, 1-1000. */
  limit?: number;
}

export interface ModelInfo {
  name: string;
  aliases: Array<string>;
  encoding: Encoding;
  /** A context window in tokens; at least 1. */
  context_window: number;
  /** Most tokens one reply may have; null when not published. */
  max_output: number | null;
  /** True when the encoding is the model's own tokenizer. */
  exact: boolean;
}

export interface ModelsReply {
  models: Array<ModelInfo>;
}

/** OpenAI Chat Completions ``usage``; cached tokens are inside ``prompt_tokens``. */
export interface OpenAIUsage {
  /** A token count; never negative. */
  prompt_tokens: number;
  completion_tokens?: number | null;
}

export interface SessionRemovedEvent {
  type: "session_removed";
  /** 1-128 characters of A-Z a-z 0-9 _ -; it becomes a NATS subject token. */
  session_id: string;
}

export interface SessionsReply {
  /** Nearest to compaction first (fewest tokens left). */
  sessions: Array<ContextUsage>;
  /** Live sessions in all (the list may hold fewer). */
  total: number;
}

export interface TextPart {
  type: "text";
  text: string;
}

export interface TokenCount {
  /** A token count; never negative. */
  count: number;
  /** The model counted for, or null when only an encoding was given. */
  model: string | null;
  encoding: Encoding;
  /** True when the encoding is the model's own tokenizer. */
  exact: boolean;
}

export interface TokenCountEvent {
  type: "token_count";
  /** 1-128 characters of A-Z a-z 0-9 _ -; it becomes a NATS subject token. */
  session_id: string;
  data: TokenUsage;
  /** Unix seconds when the event was published. */
  timestamp: number;
}

/** ``ctxmeter.tokens.count``: a text or chat messages, counted with a model's or an encoding's tokenizer. */
export interface TokenCountRequest {
  text?: string | null;
  messages?: Array<ChatMessage> | null;
  model?: string | null;
  encoding?: Encoding | null;
}

/** A session's draft message count (``count``/``max``/``percentage``/``warning`` as front ends read them). */
export interface TokenUsage {
  /** 1-128 characters of A-Z a-z 0-9 _ -; it becomes a NATS subject token. */
  session_id: string;
  /** A token count; never negative. */
  count: number;
  /** A context window in tokens; at least 1. */
  max: number;
  /** 0-100, rounded to 2 decimals. */
  percentage: number;
  /** True from the warning threshold (80 % by default). */
  warning: boolean;
  level: ContextLevel;
  model: string | null;
  encoding: Encoding;
  exact: boolean;
  /** The KV revision of this state; 0 when nothing is stored yet. Drop anything older. */
  revision: number;
  /** RFC 3339 time of the last change, UTC. */
  updated_at: string;
}

/** ``add`` (context used) and ``free`` (context freed, e.g. by compression). */
export interface TokensDelta {
  /** A token count; never negative. */
  tokens: number;
}

/** A provider's usage report: what the model saw and wrote is now the context used. */
export interface UsageRequest {
  usage: OpenAIUsage | AnthropicUsage | GeminiUsage;
  model?: string | null;
}
