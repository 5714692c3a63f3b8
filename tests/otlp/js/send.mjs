// Sends GenAI inference spans and Claude Code-like log events for one session with the OpenTelemetry JS
// SDK's OTLP/HTTP exporters (JSON), then flushes. Usage: node send.mjs <edge base URL> <session id>
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { LoggerProvider, BatchLogRecordProcessor } from "@opentelemetry/sdk-logs";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPLogExporter } from "@opentelemetry/exporter-logs-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";

const [base, session] = process.argv.slice(2);
const resource = resourceFromAttributes({ "service.name": "ctxmeter-js-test" });

const tracerProvider = new BasicTracerProvider({
  resource,
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${base}/v1/traces` }))],
});
const tracer = tracerProvider.getTracer("test");
for (const input of [500, 1500]) {
  const span = tracer.startSpan("chat gpt-4.1", {
    attributes: {
      "gen_ai.operation.name": "chat",
      "gen_ai.conversation.id": `${session}-spans`,
      "gen_ai.request.model": "gpt-4.1",
      "gen_ai.usage.input_tokens": input,
      "gen_ai.usage.output_tokens": 25,
    },
  });
  span.end();
}
// An agent span with the run's aggregate, ended last: it must not set the meter.
tracer
  .startSpan("invoke_agent a", {
    attributes: {
      "gen_ai.operation.name": "invoke_agent",
      "gen_ai.conversation.id": `${session}-spans`,
      "gen_ai.usage.input_tokens": 2000,
      "gen_ai.usage.output_tokens": 50,
    },
  })
  .end();

const loggerProvider = new LoggerProvider({
  resource,
  processors: [new BatchLogRecordProcessor({ exporter: new OTLPLogExporter({ url: `${base}/v1/logs` }) })],
});
loggerProvider.getLogger("com.anthropic.claude_code.events").emit({
  body: "claude_code.api_request",
  attributes: {
    "session.id": `${session}-logs`,
    "event.name": "api_request",
    model: "claude-sonnet-4-5",
    input_tokens: 5,
    output_tokens: 60,
    cache_read_tokens: 7000,
    cache_creation_tokens: 100,
  },
});

await tracerProvider.forceFlush();
await loggerProvider.forceFlush();
await tracerProvider.shutdown();
await loggerProvider.shutdown();
