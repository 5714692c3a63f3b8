// Types of ctxmeter-client. The reply shapes are the JSON objects of ctxmeter's contract, in schemas.d.ts
// (generated from schemas/json/*.json in the ctxmeter repository by `ctxmeter schemas`).

import type { NatsConnection, NodeConnectionOptions } from "@nats-io/transport-node";

/** `^[A-Za-z0-9_-]{1,128}$`: a session id becomes a NATS subject token. */
export declare const SESSION_ID_PATTERN: string;
/** The request header carrying a change's idempotency key. */
export declare const IDEMPOTENCY_HEADER: "Nats-Msg-Id";
/** The reply header saying a key was already applied (`true`). */
export declare const DUPLICATE_HEADER: "Ctxmeter-Duplicate";
/** Codes thrown at once: the same request can never succeed. */
export declare const INPUT_ERRORS: readonly InputErrorCode[];
/** Codes a call retries by itself until its deadline. */
export declare const RETRYABLE_ERRORS: readonly RetryableErrorCode[];

import type {
  ContextHistory,
  ContextLevel,
  ContextUsage,
  Encoding,
  HistoryOp,
  HistoryPoint,
  ModelInfo,
  ModelsReply,
  TokenCount,
  TokenUsage,
  WindowSource,
} from "./schemas.js";

// The replies are generated from ctxmeter's JSON Schema (schemas.d.ts).
export type {
  ContextHistory,
  ContextUsage,
  Encoding,
  HistoryOp,
  HistoryPoint,
  ModelInfo,
  ModelsReply,
  TokenCount,
  TokenUsage,
  WindowSource,
};
export type Level = ContextLevel;

export type InputErrorCode =
  | "invalid_json"
  | "invalid_request"
  | "invalid_session_id"
  | "unknown_model"
  | "payload_too_large";
export type RetryableErrorCode = "unavailable" | "conflict" | "internal";
/** `forbidden`: NATS denied the request (the connection's permissions). `store_full`: the state store
 * has no room for the change (not retried: room comes back as sessions expire). */
export type ErrorCode = InputErrorCode | RetryableErrorCode | "forbidden" | "store_full";

/**
 * The reply of a state-changing call. `duplicate` (not enumerable, so JSON.stringify and spreads leave
 * it out) is true when the functions had already applied this call's idempotency key
 * (`Ctxmeter-Duplicate: true`): nothing changed, and the reply is the session's current state.
 */
export type Changed<T> = T & { readonly duplicate: boolean };

/** A chat message as OpenAI's chat API takes it; only text content is counted. */
export interface ChatMessage {
  role: string;
  content?: string | { type: "text"; text: string }[] | null;
  name?: string | null;
}

/** OpenAI Chat Completions `usage`. */
export interface OpenAIUsage {
  prompt_tokens: number;
  completion_tokens?: number | null;
  [field: string]: unknown;
}
/** Anthropic Messages `usage`, and OpenAI Responses `usage`. */
export interface AnthropicUsage {
  input_tokens: number;
  output_tokens?: number | null;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
  [field: string]: unknown;
}
/** Gemini `usageMetadata` (camel case, as @google/genai and the REST API have it). */
export interface GeminiUsage {
  promptTokenCount?: number | null;
  candidatesTokenCount?: number | null;
  toolUsePromptTokenCount?: number | null;
  [field: string]: unknown;
}
/** Gemini `usage_metadata` in snake case. */
export interface GeminiSnakeUsage {
  prompt_token_count?: number | null;
  candidates_token_count?: number | null;
  tool_use_prompt_token_count?: number | null;
  [field: string]: unknown;
}
export type ProviderUsage = OpenAIUsage | AnthropicUsage | GeminiUsage | GeminiSnakeUsage;

/**
 * What `report` takes: a response (OpenAI Chat Completions or Responses, Anthropic Message, Gemini
 * GenerateContentResponse; SDK objects or plain objects) or its usage object.
 */
export type UsageSource =
  | ProviderUsage
  | { usage: ProviderUsage | null | undefined; model?: string; [field: string]: unknown }
  | { usageMetadata: GeminiUsage | null | undefined; modelVersion?: string; [field: string]: unknown }
  | { usage_metadata: GeminiSnakeUsage | null | undefined; model_version?: string; [field: string]: unknown }
  | object;

export interface CallOptions {
  /** Milliseconds this call keeps retrying; the meter's `deadline` when omitted. */
  deadline?: number;
}

export interface ChangeOptions extends CallOptions {
  /**
   * The call's idempotency key (1-128 printable ASCII characters); a random UUID when omitted. Give your
   * own (e.g. the provider's response id) to make a change at most once across processes.
   */
  idempotencyKey?: string;
}

export interface SetFields {
  used: number;
  /** Kept as stored (or the model's window) when omitted. */
  total?: number | null;
  model?: string | null;
  reserved?: number | null;
  compact_at?: number | null;
  /** True when `used` is your estimate, not a count. */
  estimated?: boolean | null;
}

export interface RetryInfo {
  subject: string;
  /** The attempt that failed, from 1. */
  attempt: number;
  code: RetryableErrorCode;
  /** Milliseconds until the next attempt. */
  delay: number;
  error: CtxMeterError;
}

export interface CtxMeterOptions {
  /** Milliseconds a call keeps retrying before it throws (10 000). */
  deadline?: number;
  /** Milliseconds one attempt waits for its reply (3 000; never past the deadline). */
  attemptTimeout?: number;
  /** The first backoff step in milliseconds (50); each retry waits a random time up to the step. */
  backoffInitial?: number;
  /** The largest backoff step in milliseconds (1 000). */
  backoffMax?: number;
  /** Called before each retry's wait (for logs and metrics). */
  onRetry?: (info: RetryInfo) => void;
}

export declare class CtxMeterError extends Error {
  constructor(code: string, message: string, options?: { status?: number; cause?: unknown; attempts?: number });
  readonly name: "CtxMeterError";
  /** One of ErrorCode's values; a plain string, so a code a newer server adds still arrives. */
  code: ErrorCode | (string & {});
  /** Requests the call sent; 0 when it was refused before sending anything. */
  attempts: number;
  /** The micro status of an error reply (400, 404, 409, 413, 500), when the server answered one. */
  status?: number;
  /** True for the codes the client retries by itself. */
  readonly retryable: boolean;
}

export declare function isSessionId(candidate: unknown): candidate is string;

/**
 * What `report` sends for a response, stream event, Vercel AI SDK result or step, or usage object: the usage
 * (null and undefined fields dropped), the model it names, and `continues` for Anthropic's message_delta.
 */
export declare function usageOf(
  responseOrUsage: UsageSource,
): Promise<{ usage: Record<string, unknown>; model: string | undefined; continues?: true }>;

export declare class CtxMeter {
  /** A meter on an existing connection; `close()` leaves that connection open. */
  constructor(nc: NatsConnection, options?: CtxMeterOptions);
  /** Connects to NATS (natsOptions as @nats-io/transport-node's `connect` takes them); `close()` closes it. */
  static connect(
    servers?: string | string[],
    natsOptions?: NodeConnectionOptions,
    options?: CtxMeterOptions,
  ): Promise<CtxMeter>;
  readonly nc: NatsConnection;
  close(): Promise<void>;

  get(sessionId: string, options?: CallOptions): Promise<ContextUsage>;
  set(sessionId: string, fields: SetFields, options?: ChangeOptions): Promise<Changed<ContextUsage>>;
  /** Context used grew by `tokens` (an estimate until the next `report`). */
  add(sessionId: string, tokens: number, options?: ChangeOptions): Promise<Changed<ContextUsage>>;
  /** Context freed (floors at 0). */
  free(sessionId: string, tokens: number, options?: ChangeOptions): Promise<Changed<ContextUsage>>;
  /** Zero used; window, model, reserved and compact_at are kept. */
  reset(sessionId: string, options?: ChangeOptions): Promise<Changed<ContextUsage>>;
  /** The agent compacted its context; `used` is its size now. */
  compact(sessionId: string, used: number, options?: ChangeOptions): Promise<Changed<ContextUsage>>;
  /** A provider's usage report becomes the context used; `model` defaults to the response's own. */
  report(
    sessionId: string,
    responseOrUsage: UsageSource,
    options?: ChangeOptions & { model?: string },
  ): Promise<Changed<ContextUsage>>;
  history(sessionId: string, options?: CallOptions & { limit?: number }): Promise<ContextHistory>;
  count(
    textOrMessages: string | ChatMessage[],
    options?: CallOptions & { model?: string; encoding?: Encoding },
  ): Promise<TokenCount>;
  /** Counts and stores a session's draft message; browsers watching the session see it. */
  draft(
    sessionId: string,
    text: string,
    options?: ChangeOptions & { model?: string; max?: number },
  ): Promise<Changed<TokenUsage>>;
  models(options?: CallOptions): Promise<ModelsReply>;
}

export default CtxMeter;
