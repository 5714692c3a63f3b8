// The payloads of ctxmeter's contract, generated from its JSON Schema (schemas/json) by `ctxmeter schemas`
// (schemas/typescript.py). Do not edit: change schemas/models.py and run `ctxmeter schemas`.

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

export interface CompletionTokensDetails {
  reasoning_tokens?: number | null;
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
  /** Reasoning (thinking) tokens of the last reported response, beside used: counted in it only when the model keeps them in context; null when not reported apart. */
  reasoning: number | null;
  /** Where total comes from: the model's window, a reported total, or the default (a guess). */
  window_source: WindowSource;
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

/** Gemini ``usage_metadata`` (snake or camel case): cached content is inside the prompt count, tool-use prompts beside it; thoughts are beside the candidates (``thoughts_token_count``). */
export interface GeminiUsage {
  /** A token count; never negative. */
  promptTokenCount: number;
  candidatesTokenCount?: number | null;
  toolUsePromptTokenCount?: number | null;
  thoughtsTokenCount?: number | null;
}

/** The change a history point records: the operation that made it. */
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

/** ``input_tokens``/``output_tokens``, as several APIs and frameworks count them: - Anthropic: cache writes and reads are beside ``input_tokens`` (added to it); thinking is inside ``output_tokens`` (``output_tokens_details.thinking_tokens`` where the API reports it). A ``message_delta`` event of older API versions carries ``output_tokens`` alone; - OpenAI Responses and the OpenAI Agents SDK: cached tokens inside ``input_tokens``, reasoning inside ``output_tokens`` (``output_tokens_details.reasoning_tokens``); - LangChain's ``usage_metadata``: cache inside ``input_tokens`` (``input_token_details``), reasoning inside ``output_tokens`` (``output_token_details.reasoning``); - pydantic-ai's ``RequestUsage``: cache inside ``input_tokens`` (``cache_read_tokens``, ``cache_write_tokens``), reasoning inside ``output_tokens`` (``output_reasoning_tokens``, formerly ``details["reasoning_tokens"]``). */
export interface InputOutputUsage {
  input_tokens?: number | null;
  output_tokens?: number | null;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
  output_tokens_details?: OutputTokensDetails | null;
  output_token_details?: LangChainOutputDetails | null;
  output_reasoning_tokens?: number | null;
  details?: Record<string, unknown> | null;
}

export interface LangChainOutputDetails {
  reasoning?: number | null;
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

/** OpenAI Chat Completions ``usage``: cached tokens are inside ``prompt_tokens``, reasoning inside ``completion_tokens``. LiteLLM's usage has this shape for every provider, and for Anthropic adds ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` beside ``prompt_tokens``, which already holds them. */
export interface OpenAIUsage {
  /** A token count; never negative. */
  prompt_tokens: number;
  completion_tokens?: number | null;
  completion_tokens_details?: CompletionTokensDetails | null;
}

export interface OutputTokensDetails {
  reasoning_tokens?: number | null;
  thinking_tokens?: number | null;
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

/** A provider's usage report: what the next request carries of this response becomes the context used. */
export interface UsageRequest {
  usage: OpenAIUsage | InputOutputUsage | GeminiUsage | VercelUsage | VercelV4Usage;
  model?: string | null;
  /** True for the rest of the response reported just before (Anthropic's message_delta after its message_start): the model and window stand, and an input count it lacks is that report's. */
  continues?: boolean;
  /** True when the counts include reasoning of unreported size that leaves the context (Anthropic thinking without output_tokens_details): used is then an upper bound, shown as an estimate. */
  estimated?: boolean;
}

export interface VercelOutputDetails {
  reasoningTokens?: number | null;
}

/** The Vercel AI SDK's ``LanguageModelUsage`` (AI SDK 5 and later): ``inputTokens`` with cached tokens inside (AI SDK 6 counts them so for every provider), ``outputTokens`` with reasoning inside (``outputTokenDetails.reasoningTokens``, AI SDK 5 ``reasoningTokens``). */
export interface VercelUsage {
  inputTokens?: number | null;
  outputTokens?: number | null;
  reasoningTokens?: number | null;
  outputTokenDetails?: VercelOutputDetails | null;
}

/** The Vercel AI SDK 4's usage: ``promptTokens``, ``completionTokens``. */
export interface VercelV4Usage {
  /** A token count; never negative. */
  promptTokens: number;
  completionTokens?: number | null;
}

/** Where a session's ``total`` comes from. */
export type WindowSource = "model" | "reported" | "default";
