// What every test file shares: the NATS servers the pytest wrapper (tests/clients/test_node_client.py)
// hands over, session ids, meters that are closed after each test, and a check of replies against the
// contract's committed JSON Schema files.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { after } from "node:test";
import { connect } from "@nats-io/transport-node";

import { CtxMeter } from "../../index.js";

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these tests through tests/clients/test_node_client.py (pytest)`);
  }
  return value;
}

/** A NATS server where the real ctxmeter functions serve. */
export const natsUrl = () => required("CTXMETER_NODE_NATS_URL");
/** A NATS server where no functions serve (until a test asks the wrapper to start them). */
export const bareNatsUrl = () => required("CTXMETER_NODE_BARE_NATS_URL");

export const newSessionId = () => `node-${randomUUID()}`;

const opened = [];
after(async () => {
  for (const nc of opened.splice(0)) if (!nc.isClosed()) await nc.close();
});

/** A raw NATS connection, closed when the file's tests are done. */
export async function natsConnection(url = natsUrl()) {
  const nc = await connect({ servers: url });
  opened.push(nc);
  return nc;
}

/** A meter on its own connection (closed when the file's tests are done). */
export async function meter(options = {}, url = natsUrl()) {
  return new CtxMeter(await natsConnection(url), options);
}

// -- the contract's JSON Schema --------------------------------------------------------------------

const SCHEMA_DIR = new URL("../../../../schemas/json/", import.meta.url);
const schemas = new Map();

function schemaNamed(name) {
  if (!schemas.has(name)) schemas.set(name, JSON.parse(readFileSync(new URL(`${name}.json`, SCHEMA_DIR), "utf8")));
  return schemas.get(name);
}

const TYPES = {
  string: (v) => typeof v === "string",
  integer: (v) => Number.isInteger(v),
  number: (v) => typeof v === "number" && Number.isFinite(v),
  boolean: (v) => typeof v === "boolean",
  null: (v) => v === null,
  array: (v) => Array.isArray(v),
  object: (v) => v !== null && typeof v === "object" && !Array.isArray(v),
};

// The problems of `value` against `schema`: the subset of JSON Schema that pydantic writes for
// ctxmeter's replies. Beyond the schema, every declared property must be present: the functions always
// send every field, defaults included, and a client must be able to rely on that.
function problems(value, schema, root, path) {
  if (schema.$ref) {
    const name = schema.$ref.replace("#/$defs/", "");
    return problems(value, root.$defs[name], root, path);
  }
  if (schema.anyOf) {
    const fits = schema.anyOf.some((option) => problems(value, option, root, path).length === 0);
    return fits ? [] : [`${path}: ${JSON.stringify(value)} fits none of anyOf`];
  }
  const found = [];
  if (schema.type && !TYPES[schema.type](value)) return [`${path}: ${JSON.stringify(value)} is not ${schema.type}`];
  if (schema.enum && !schema.enum.includes(value)) found.push(`${path}: ${JSON.stringify(value)} not in enum`);
  if (schema.minimum !== undefined && value < schema.minimum) found.push(`${path}: ${value} < ${schema.minimum}`);
  if (schema.maximum !== undefined && value > schema.maximum) found.push(`${path}: ${value} > ${schema.maximum}`);
  if (schema.maxLength !== undefined && value.length > schema.maxLength) found.push(`${path}: too long`);
  if (schema.pattern && !new RegExp(schema.pattern).test(value)) found.push(`${path}: does not match pattern`);
  if (schema.items) value.forEach((item, i) => found.push(...problems(item, schema.items, root, `${path}[${i}]`)));
  if (schema.properties) {
    for (const [key, sub] of Object.entries(schema.properties)) {
      if (!(key in value)) found.push(`${path}.${key}: missing`);
      else found.push(...problems(value[key], sub, root, `${path}.${key}`));
    }
    if (schema.additionalProperties === false) {
      const extra = Object.keys(value).filter((key) => !(key in schema.properties));
      found.push(...extra.map((key) => `${path}.${key}: not in schema`));
    }
  }
  return found;
}

/** Asserts `value` is a `name` (a file in schemas/json/) with every field the schema declares. */
export function assertShape(value, name) {
  const schema = schemaNamed(name);
  assert.deepEqual(problems(value, schema, schema, name), [], `not a ${name}: ${JSON.stringify(value)}`);
}

/** Asserts `promise` rejects with a CtxMeterError of `code`; returns the error for further checks. */
export async function rejectsWith(promise, code) {
  let caught;
  await assert.rejects(promise, (error) => {
    caught = error;
    return true;
  });
  assert.equal(caught?.name, "CtxMeterError", `expected a CtxMeterError, got ${caught?.stack ?? caught}`);
  assert.equal(caught.code, code, `expected code ${code}, got ${caught.code}: ${caught.message}`);
  return caught;
}
