// report(): what agent runtimes have in hand, shaped exactly as the official SDKs return it.
//
// `openai` and `@anthropic-ai/sdk` return the API's JSON as parsed plain objects, so the fixtures below
// are those objects (fields as their typings declare them, nulls included). `@google/genai` returns
// class instances (GenerateContentResponse, with getters such as `text`, and a usageMetadata object in
// camel case): mirrored by the small classes below. Expected counts follow the contract's formulas.

import assert from "node:assert/strict";
import { test } from "node:test";

import { usageOf } from "../index.js";
import { assertShape, meter, newSessionId, rejectsWith } from "./support/env.js";

// openai: client.chat.completions.create(...)
const chatCompletion = {
  id: "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  object: "chat.completion",
  created: 1741569952,
  model: "gpt-4o-2024-08-06",
  choices: [
    {
      index: 0,
      message: { role: "assistant", content: "Hello! How can I help?", refusal: null, annotations: [] },
      logprobs: null,
      finish_reason: "stop",
    },
  ],
  usage: {
    prompt_tokens: 1200,
    completion_tokens: 300,
    total_tokens: 1500,
    prompt_tokens_details: { cached_tokens: 1024, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  },
  service_tier: "default",
  system_fingerprint: "fp_fc9f1d7035",
};

// openai: client.responses.create(...)
const response = {
  id: "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  object: "response",
  created_at: 1741476542,
  status: "completed",
  error: null,
  incomplete_details: null,
  instructions: null,
  max_output_tokens: null,
  model: "gpt-4.1-2025-04-14",
  output: [
    {
      type: "message",
      id: "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
      status: "completed",
      role: "assistant",
      content: [{ type: "output_text", text: "In a peaceful grove...", annotations: [] }],
    },
  ],
  parallel_tool_calls: true,
  previous_response_id: null,
  reasoning: { effort: null, summary: null },
  store: true,
  temperature: 1.0,
  text: { format: { type: "text" } },
  tool_choice: "auto",
  tools: [],
  top_p: 1.0,
  truncation: "disabled",
  usage: {
    input_tokens: 2000,
    input_tokens_details: { cached_tokens: 500 },
    output_tokens: 250,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: 2250,
  },
  user: null,
  metadata: {},
  output_text: "In a peaceful grove...",
};

// @anthropic-ai/sdk: client.messages.create(...)
const anthropicMessage = {
  id: "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  type: "message",
  role: "assistant",
  model: "claude-sonnet-4-20250514",
  content: [{ type: "text", text: "Hi! My name is Claude." }],
  stop_reason: "end_turn",
  stop_sequence: null,
  usage: {
    input_tokens: 100,
    cache_creation_input_tokens: 2000,
    cache_read_input_tokens: 3000,
    cache_creation: { ephemeral_5m_input_tokens: 2000, ephemeral_1h_input_tokens: 0 },
    output_tokens: 400,
    server_tool_use: null,
    service_tier: "standard",
  },
};

// @google/genai: ai.models.generateContent(...) returns these classes, filled from the REST JSON.
class GenerateContentResponseUsageMetadata {}
class GenerateContentResponse {
  get text() {
    return this.candidates?.[0]?.content?.parts?.map((part) => part.text).join("") ?? "";
  }
}
function geminiResponse() {
  const usage = Object.assign(new GenerateContentResponseUsageMetadata(), {
    promptTokenCount: 800,
    candidatesTokenCount: 150,
    totalTokenCount: 1030,
    thoughtsTokenCount: 50,
    toolUsePromptTokenCount: 30,
    promptTokensDetails: [{ modality: "TEXT", tokenCount: 800 }],
  });
  return Object.assign(new GenerateContentResponse(), {
    sdkHttpResponse: { headers: { "content-type": "application/json; charset=UTF-8" } },
    candidates: [{ content: { parts: [{ text: "Hello" }], role: "model" }, finishReason: "STOP", index: 0 }],
    modelVersion: "gemini-2.5-flash",
    responseId: "f2a4aL2nLIGdxN8P7pW3oAw",
    usageMetadata: usage,
  });
}

test("an OpenAI Chat Completions response: prompt + completion, window of its model", async () => {
  const m = await meter();
  const usage = await m.report(newSessionId(), chatCompletion);
  assertShape(usage, "ContextUsage");
  assert.equal(usage.used, 1500);
  assert.equal(usage.total, 128_000, "gpt-4o's window");
  assert.equal(usage.estimated, false);
  assert.equal(usage.duplicate, false);
});

test("an OpenAI Responses response: input + output (cached tokens are inside input)", async () => {
  const m = await meter();
  const usage = await m.report(newSessionId(), response);
  assert.equal(usage.used, 2250);
  assert.equal(usage.total, 1_047_576, "gpt-4.1's window");
});

test("an Anthropic Message: input + cache creation + cache read + output", async () => {
  const m = await meter();
  const usage = await m.report(newSessionId(), anthropicMessage);
  assert.equal(usage.used, 5500);
  assert.equal(usage.total, 200_000);
});

test("an Anthropic usage with null cache counts (dropped before sending)", async () => {
  const m = await meter();
  const usage = await m.report(
    newSessionId(),
    { input_tokens: 10, output_tokens: 5, cache_creation_input_tokens: null, cache_read_input_tokens: null },
    { model: "claude-opus-4" },
  );
  assert.equal(usage.used, 15);
  assert.equal(usage.model, "claude-opus-4");
});

test("a Gemini GenerateContentResponse (SDK classes, camel case): prompt + candidates + tool use", async () => {
  const m = await meter();
  const gemini = geminiResponse();
  assert.equal(gemini.text, "Hello", "the mirrored SDK class works like the SDK's");
  const usage = await m.report(newSessionId(), gemini);
  assertShape(usage, "ContextUsage");
  assert.equal(usage.used, 980);
  assert.equal(usage.total, 1_048_576, "gemini-2.5-flash's window");
});

test("Gemini usage_metadata in snake case, and a usageMetadata on its own", async () => {
  const m = await meter();
  const snake = {
    usage_metadata: { prompt_token_count: 40, candidates_token_count: 2, cached_content_token_count: null },
    model_version: "gemini-2.5-pro",
  };
  assert.equal((await m.report(newSessionId(), snake)).used, 42);
  const alone = await m.report(newSessionId(), geminiResponse().usageMetadata, { model: "gemini-2.5-pro" });
  assert.equal(alone.used, 980);
  assert.equal(alone.model, "gemini-2.5-pro");
});

test("a usage object on its own, and an explicit model over the response's", async () => {
  const m = await meter();
  const sid = newSessionId();
  const alone = await m.report(sid, chatCompletion.usage);
  assert.equal(alone.used, 1500);
  assert.equal(alone.model, null, "a usage object names no model");
  assert.equal(alone.window_source, "default", "and no model's window is assumed");
  const overridden = await m.report(sid, chatCompletion, { model: "gpt-4.1" });
  assert.equal(overridden.model, "gpt-4.1");
  assert.equal(overridden.total, 1_047_576);
});

test("report after adds makes used exact again", async () => {
  const m = await meter();
  const sid = newSessionId();
  assert.equal((await m.add(sid, 99)).estimated, true);
  const usage = await m.report(sid, chatCompletion);
  assert.equal(usage.estimated, false);
  assert.equal(usage.used, 1500);
});

test("usageOf sends the usage object without its null fields, and the model the response names", async () => {
  assert.deepEqual(await usageOf(anthropicMessage), {
    usage: {
      input_tokens: 100,
      cache_creation_input_tokens: 2000,
      cache_read_input_tokens: 3000,
      cache_creation: { ephemeral_5m_input_tokens: 2000, ephemeral_1h_input_tokens: 0 },
      output_tokens: 400,
      service_tier: "standard",
    },
    model: "claude-sonnet-4-20250514",
  });
  assert.equal((await usageOf(geminiResponse())).usage.promptTokenCount, 800);
  assert.deepEqual(await usageOf({ prompt_tokens: 3 }), { usage: { prompt_tokens: 3 }, model: undefined });
});

test("a response without usage (a streamed chunk) and a non-object are refused before sending", async () => {
  const m = await meter();
  const chunk = { id: "chatcmpl-1", object: "chat.completion.chunk", model: "gpt-4o", choices: [], usage: null };
  const error = await rejectsWith(m.report(newSessionId(), chunk), "invalid_request");
  assert.equal(error.attempts, 0);
  assert.match(error.message, /include_usage/);
  assert.equal((await rejectsWith(m.report(newSessionId(), "1500"), "invalid_request")).attempts, 0);
});

test("a mix of two providers' fields is the server's invalid_request, thrown at once", async () => {
  const m = await meter();
  const error = await rejectsWith(m.report(newSessionId(), { prompt_tokens: 1, input_tokens: 2 }), "invalid_request");
  assert.equal(error.attempts, 1, "input errors are not retried");
});

test("a model ctxmeter does not know still reports the truth, in the window already set", async () => {
  const m = await meter();
  const sid = newSessionId();
  await m.set(sid, { used: 0, total: 50_000 });
  const usage = await m.report(sid, { ...chatCompletion, model: "gpt-99-preview" });
  assert.equal(usage.used, 1500);
  assert.equal(usage.total, 50_000);
  assert.equal(usage.model, "gpt-99-preview");
});
