import { beforeAll, describe, expect, it } from 'vitest';
import { createReadStream, existsSync } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { createInterface } from 'node:readline';
import { otlpLogsAdapter, otlpTracesAdapter } from '../../services/collector/adapters/otlp.ts';
import type { AdapterResult } from '../../services/collector/adapters/adapter.ts';
import { encodeLogsRequestProto, encodeTraceRequestProto } from '../../services/collector/otlp/otlp-proto.ts';
import { BodyError } from '../../shared/errors.ts';
import { EVENT_TYPE, type CanonicalEvent } from '../../shared/event.ts';

// ---------------------------------------------------------------------------------------------
// Fixture helpers
// ---------------------------------------------------------------------------------------------

type Json = Record<string, unknown>;

/** A JS value as an OTLP/JSON AnyValue (integers as intValue strings, like real exporters). */
function any(v: unknown): Json {
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (typeof v === 'number') return Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
  if (Array.isArray(v)) return { arrayValue: { values: v.map(any) } };
  if (typeof v === 'object' && v !== null) return { kvlistValue: { values: attrs(v as Json) } };
  throw new Error(`no AnyValue for ${String(v)}`);
}

function attrs(o: Json): Json[] {
  return Object.entries(o).map(([key, value]) => ({ key, value: any(value) }));
}

function traceRequest(spans: Json[], resource: Json = { 'service.name': 'banking-assistant' }): Json {
  return { resourceSpans: [{ resource: { attributes: attrs(resource) }, scopeSpans: [{ scope: { name: 'test-scope', version: '1' }, spans }] }] };
}

function logsRequest(logRecords: Json[], resource: Json = { 'service.name': 'banking-assistant' }): Json {
  return { resourceLogs: [{ resource: { attributes: attrs(resource) }, scopeLogs: [{ scope: { name: 'test-scope' }, logRecords }] }] };
}

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const parseJson = (v: unknown): AdapterResult => otlpTracesAdapter.parse(json(v), 'application/json');
const parseProto = (v: unknown): AdapterResult => otlpTracesAdapter.parse(Buffer.from(encodeTraceRequestProto(v)), 'application/x-protobuf');

function only<T>(items: T[], pred: (x: T) => boolean): T {
  const found = items.filter(pred);
  expect(found).toHaveLength(1);
  return found[0] as T;
}

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const TRACE_B = '0af7651916cd43dd8448eb211c80319c';
const ROOT = '00f067aa0ba902b7';
const CHAT = '1111111111111111';
const TOOL_OK = '2222222222222222';
const TOOL_ERR = '3333333333333333';
const NS = (ms: number, extraNs = 0): string => (BigInt(ms) * 1_000_000n + BigInt(extraNs)).toString();
const T0 = 1_780_000_000_000;

/** An agent run in the dataset's shape: invoke_agent root, a chat span, a good and a failing tool call. */
function agentRun(): Json {
  return traceRequest([
    {
      traceId: TRACE,
      spanId: ROOT,
      name: 'invoke_agent banking-assistant',
      kind: 1,
      startTimeUnixNano: NS(T0),
      endTimeUnixNano: NS(T0 + 900),
      attributes: attrs({
        'gen_ai.operation.name': 'invoke_agent',
        'gen_ai.agent.name': 'banking-assistant',
        'gen_ai.agent.id': 'agent-7',
        'gen_ai.conversation.id': 'task-abc',
        'gen_ai.system_instructions': '[{"type":"text","content":"You are a bank assistant."}]',
        'gen_ai.input.messages': '[{"role":"user","parts":[{"type":"text","content":"pay my rent"}]}]',
      }),
      status: {},
    },
    {
      traceId: TRACE,
      spanId: CHAT,
      parentSpanId: ROOT,
      name: 'chat gpt-4o',
      kind: 3,
      startTimeUnixNano: NS(T0 + 10),
      endTimeUnixNano: NS(T0 + 400),
      attributes: attrs({
        'gen_ai.operation.name': 'chat',
        'gen_ai.request.model': 'gpt-4o',
        'gen_ai.provider.name': 'openai',
        'gen_ai.usage.input_tokens': 812,
        'gen_ai.usage.output_tokens': 34,
        'gen_ai.output.messages': '[{"role":"assistant","parts":[{"type":"tool_call","name":"send_money"}]}]',
      }),
      status: {},
    },
    {
      traceId: TRACE,
      spanId: TOOL_OK,
      parentSpanId: ROOT,
      name: 'execute_tool send_money',
      kind: 1,
      startTimeUnixNano: NS(T0 + 400),
      endTimeUnixNano: NS(T0 + 450),
      attributes: attrs({
        'gen_ai.operation.name': 'execute_tool',
        'gen_ai.tool.name': 'send_money',
        'gen_ai.tool.call.id': 'call_1',
        'gen_ai.tool.call.arguments': { recipient: 'GB29NWBK60161331926819', amount: 1200 },
        'gen_ai.tool.call.result': '{"message":"Transaction to GB29... for 1200 sent."}',
      }),
      status: {},
    },
    {
      traceId: TRACE,
      spanId: TOOL_ERR,
      parentSpanId: ROOT,
      // No gen_ai.tool.name: the name comes from the span name.
      name: 'execute_tool get_balance',
      kind: 1,
      startTimeUnixNano: NS(T0 + 460),
      endTimeUnixNano: NS(T0 + 470),
      attributes: attrs({ 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.call.arguments': '{}' }),
      status: { code: 2, message: 'ValueError: account locked' },
    },
  ]);
}

// ---------------------------------------------------------------------------------------------
// Dataset
// ---------------------------------------------------------------------------------------------

const DATASET_URL = new URL('../../../shared/datasets/agentdojo/banking-slack.otlp.ndjson.gz', import.meta.url);
const DATASET_PRESENT = existsSync(DATASET_URL);
const DATASET_LINES = 200;
const DATASET_TITLE = DATASET_PRESENT
  ? `agentdojo dataset (first ${DATASET_LINES} requests)`
  : `agentdojo dataset [SKIPPED: ${DATASET_URL.pathname} not found; CI has it under ../shared/datasets]`;

async function readDatasetLines(limit: number): Promise<string[]> {
  const file = createReadStream(DATASET_URL);
  const gunzip = file.pipe(createGunzip());
  const lines = createInterface({ input: gunzip, crlfDelay: Infinity });
  const out: string[] = [];
  try {
    for await (const line of lines) {
      if (line.trim() === '') continue;
      out.push(line);
      if (out.length >= limit) break;
    }
  } finally {
    lines.close();
    gunzip.destroy();
    file.destroy();
  }
  return out;
}

interface RawSpan {
  spanId: string;
  parentSpanId?: string;
  endTimeUnixNano?: string;
  attributes: Array<{ key: string; value: { stringValue?: string } }>;
  status?: { code?: number; message?: string };
}

/** The spans of one dataset request, read with the test's own narrow typing. */
function rawSpans(request: unknown): RawSpan[] {
  const r = request as { resourceSpans: Array<{ scopeSpans: Array<{ spans: RawSpan[] }> }> };
  return r.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans));
}

function rawAttr(span: RawSpan, key: string): string | undefined {
  return span.attributes.find((a) => a.key === key)?.value.stringValue;
}

describe(DATASET_TITLE, () => {
  let lines: string[] = [];
  let results: AdapterResult[] = [];

  beforeAll(async () => {
    if (!DATASET_PRESENT) return;
    lines = await readDatasetLines(DATASET_LINES);
    results = lines.map((line) => otlpTracesAdapter.parse(Buffer.from(line), 'application/json'));
  });

  it.runIf(DATASET_PRESENT)('turns every span into an event, with no rejections', () => {
    expect(lines).toHaveLength(DATASET_LINES);
    let spans = 0;
    for (let i = 0; i < lines.length; i++) {
      const raw = rawSpans(JSON.parse(lines[i] as string));
      const res = results[i] as AdapterResult;
      expect(res.rejected).toEqual([]);
      expect(res.records).toBe(raw.length);
      const roots = raw.filter((s) => s.parentSpanId === undefined && s.endTimeUnixNano !== undefined).length;
      // One event per span, plus task.ended for each finished root agent span.
      expect(res.events).toHaveLength(raw.length + roots);
      expect(res.events.filter((e) => e.type === EVENT_TYPE.taskStarted)).toHaveLength(roots);
      expect(res.events.filter((e) => e.type === EVENT_TYPE.taskEnded)).toHaveLength(roots);
      spans += raw.length;
    }
    expect(spans).toBeGreaterThan(1000);
  });

  it.runIf(DATASET_PRESENT)("gives every event of a run the run's conversation id as task_id", () => {
    for (let i = 0; i < lines.length; i++) {
      const raw = rawSpans(JSON.parse(lines[i] as string));
      const conversation = raw.map((s) => rawAttr(s, 'gen_ai.conversation.id')).find((v) => v !== undefined);
      expect(conversation).toMatch(/^task-/);
      const events = (results[i] as AdapterResult).events;
      for (const e of events) {
        expect(e.task_id).toBe(conversation);
        expect(e.format).toBe('otlp-traces');
        expect(e.source).toBe('agent');
        expect(e.agent_name).toBeTruthy();
      }
      // The agent id stated on the root is carried to every event of the run.
      expect(new Set(events.map((e) => e.agent_id)).size).toBe(1);
    }
  });

  it.runIf(DATASET_PRESENT)('carries tool name, arguments and result, and marks failed tool calls', () => {
    let tools = 0;
    let failures = 0;
    for (let i = 0; i < lines.length; i++) {
      const raw = rawSpans(JSON.parse(lines[i] as string));
      // Span events come in span order; the replay reuses span ids, so match by position.
      const spanEvents = (results[i] as AdapterResult).events.filter((e) => e.type !== EVENT_TYPE.taskEnded);
      expect(spanEvents.map((e) => e.span_id)).toEqual(raw.map((s) => s.spanId));
      for (const [k, span] of raw.entries()) {
        const e = spanEvents[k] as CanonicalEvent;
        const op = rawAttr(span, 'gen_ai.operation.name');
        if (op === 'chat') {
          expect(e.type).toBe(EVENT_TYPE.modelCall);
          expect(e.model?.name).toBe(rawAttr(span, 'gen_ai.request.model'));
          expect(e.messages?.output).toBe(rawAttr(span, 'gen_ai.output.messages'));
        }
        if (op !== 'execute_tool') continue;
        expect(e.type).toBe(EVENT_TYPE.toolCall);
        expect(e.tool?.name).toBe(rawAttr(span, 'gen_ai.tool.name'));
        expect(e.action).toBe(`tool:${rawAttr(span, 'gen_ai.tool.name')}`);
        // The replay leaves some call ids empty; the canonical model has no empty strings.
        expect(e.tool?.call_id).toBe(rawAttr(span, 'gen_ai.tool.call.id') || undefined);
        expect(e.tool?.arguments).toBe(rawAttr(span, 'gen_ai.tool.call.arguments'));
        expect(e.tool?.result).toBe(rawAttr(span, 'gen_ai.tool.call.result'));
        const failed = span.status?.code === 2;
        expect(e.outcome).toBe(failed ? 'failure' : 'success');
        if (failed) {
          expect(e.tool?.error).toBeTruthy();
          expect(e.attributes['otel.status_description']).toBe(span.status?.message);
          failures++;
        }
        tools++;
      }
    }
    expect(tools).toBeGreaterThan(100);
    expect(failures).toBeGreaterThan(0);
  });

  it.runIf(DATASET_PRESENT)('derives the same unique event ids on every parse', () => {
    // The replay gives parallel tool calls one span id (line 21 has four `read_channel_messages`
    // spans sharing one); each must still be its own event, or storage would deduplicate them.
    const ids = results.flatMap((r) => r.events.map((e) => e.event_id));
    const again = lines.flatMap((line) => otlpTracesAdapter.parse(Buffer.from(line), 'application/json').events.map((e) => e.event_id));
    expect(again).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it.runIf(DATASET_PRESENT)('gives the same events for protobuf bodies as for the JSON bodies', () => {
    for (let i = 0; i < 50; i++) {
      const fromProto = parseProto(JSON.parse(lines[i] as string));
      expect(fromProto.rejected).toEqual([]);
      expect(fromProto.events).toEqual((results[i] as AdapterResult).events);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Traces, inline fixtures
// ---------------------------------------------------------------------------------------------

describe('otlpTracesAdapter', () => {
  it('declares its format and content types', () => {
    expect(otlpTracesAdapter.format).toBe('otlp-traces');
    expect(otlpTracesAdapter.contentTypes).toEqual(['application/json', 'application/x-protobuf', 'application/protobuf']);
    expect(otlpLogsAdapter.format).toBe('otlp-logs');
  });

  it('maps an agent run: task start and end, model call, tool calls', () => {
    const res = parseJson(agentRun());
    expect(res.rejected).toEqual([]);
    expect(res.records).toBe(4);
    expect(res.events.map((e) => e.type)).toEqual([
      EVENT_TYPE.taskStarted,
      EVENT_TYPE.taskEnded,
      EVENT_TYPE.modelCall,
      EVENT_TYPE.toolCall,
      EVENT_TYPE.toolCall,
    ]);
    for (const e of res.events) {
      expect(e.task_id).toBe('task-abc');
      expect(e.agent_id).toBe('agent-7');
      expect(e.agent_name).toBe('banking-assistant');
      expect(e.trace_id).toBe(TRACE);
    }

    const [started, ended, chat, toolOk, toolErr] = res.events as [CanonicalEvent, CanonicalEvent, CanonicalEvent, CanonicalEvent, CanonicalEvent];
    expect(started.time).toBe(T0);
    expect(started.end_time).toBe(T0 + 900);
    expect(started.messages?.system).toContain('bank assistant');
    expect(started.messages?.input).toContain('pay my rent');
    expect(started.attributes['resource.service.name']).toBe('banking-assistant');
    expect(started.attributes['gen_ai.conversation.id']).toBe('task-abc');
    expect(ended.time).toBe(T0 + 900);
    expect(ended.event_id).not.toBe(started.event_id);
    expect(ended.span_id).toBe(ROOT);

    expect(chat.parent_span_id).toBe(ROOT);
    expect(chat.model).toEqual({ name: 'gpt-4o', provider: 'openai', input_tokens: 812, output_tokens: 34 });
    expect(chat.messages?.output).toContain('tool_call');
    expect(chat.outcome).toBe('success');

    expect(toolOk.action).toBe('tool:send_money');
    expect(toolOk.tool?.name).toBe('send_money');
    expect(toolOk.tool?.call_id).toBe('call_1');
    // A structured (kvlist) argument value is serialized to JSON text.
    expect(JSON.parse(toolOk.tool?.arguments ?? '')).toEqual({ recipient: 'GB29NWBK60161331926819', amount: 1200 });
    expect(toolOk.tool?.result).toContain('Transaction');
    expect(toolOk.outcome).toBe('success');
    expect(toolOk.tool?.error).toBeUndefined();

    expect(toolErr.tool?.name).toBe('get_balance');
    expect(toolErr.outcome).toBe('failure');
    expect(toolErr.tool?.error).toBe('ValueError: account locked');
    expect(toolErr.attributes['otel.status_code']).toBe('ERROR');
  });

  it('marks a tool call with error.type but no error status as failed, naming the type', () => {
    const span = {
      traceId: TRACE,
      spanId: TOOL_OK,
      name: 'execute_tool read_file',
      startTimeUnixNano: NS(T0),
      attributes: attrs({ 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'read_file', 'error.type': 'timeout' }),
    };
    const [e] = parseJson(traceRequest([span])).events;
    expect(e?.outcome).toBe('failure');
    expect(e?.tool?.error).toBe('timeout');
  });

  it('derives event ids deterministically: same body same ids, other span other id', () => {
    const a = parseJson(agentRun()).events.map((e) => e.event_id);
    const b = parseJson(agentRun()).events.map((e) => e.event_id);
    expect(a).toEqual(b);
    expect(new Set(a).size).toBe(a.length);
    for (const id of a) expect(id).toMatch(/^[0-9a-f]{32}$/);
    // Upper-case hex ids are the same ids.
    const upper = agentRun();
    const spans = rawSpans(upper) as unknown as Json[];
    for (const s of spans) s['traceId'] = TRACE.toUpperCase();
    expect(parseJson(upper).events.map((e) => e.event_id)).toEqual(a);
  });

  it('gives the same events for a protobuf body as for the JSON body', () => {
    const fromJson = parseJson(agentRun());
    const fromProto = parseProto(agentRun());
    expect(fromProto.rejected).toEqual([]);
    expect(fromProto.events).toEqual(fromJson.events);
    expect(fromProto.events).toHaveLength(5);
  });

  it('keeps nanosecond timestamps to sub-millisecond precision', () => {
    // The sub-millisecond part must survive into the fraction, not be truncated to whole ms.
    const span = { traceId: TRACE, spanId: ROOT, name: 'work', startTimeUnixNano: NS(T0 + 123, 456_789), endTimeUnixNano: NS(T0 + 124, 1_000) };
    const [e] = parseJson(traceRequest([span])).events;
    expect(e?.time).toBeCloseTo(T0 + 123.456789, 3);
    expect(Math.floor(e?.time ?? 0)).toBe(T0 + 123);
    // One microsecond past the millisecond survives (a double's step here is about 0.24 µs).
    expect(e?.end_time).toBeGreaterThan(T0 + 124);
    expect(e?.end_time).toBeLessThan(T0 + 124.002);
  });

  it('flattens AnyValues and prefixes resource attributes', () => {
    const span = {
      traceId: TRACE,
      spanId: ROOT,
      name: 'work',
      startTimeUnixNano: NS(T0),
      attributes: [
        { key: 'small', value: { intValue: '42' } },
        { key: 'big', value: { intValue: '9007199254740993' } },
        { key: 'ratio', value: { doubleValue: 0.5 } },
        { key: 'flag', value: { boolValue: false } },
        { key: 'list', value: { arrayValue: { values: [{ stringValue: 'a' }, { intValue: 1 }] } } },
        { key: 'map', value: { kvlistValue: { values: [{ key: 'k', value: { stringValue: 'v' } }] } } },
        { key: 'raw', value: { bytesValue: 'AAEC' } },
        { key: 'nothing', value: {} },
        { key: 'service.name', value: { stringValue: 'span-level' } },
      ],
    };
    const [e] = parseJson(traceRequest([span], { 'service.name': 'svc', 'host.name': 'node-1' })).events;
    expect(e?.attributes).toMatchObject({
      small: 42,
      big: '9007199254740993',
      ratio: 0.5,
      flag: false,
      list: ['a', 1],
      map: { k: 'v' },
      raw: 'AAEC',
      nothing: null,
      'service.name': 'span-level',
      'resource.service.name': 'svc',
      'resource.host.name': 'node-1',
    });
    expect(e?.host).toBe('node-1');
    expect(e?.source).toBe('workload');
    expect(e?.type).toBe(EVENT_TYPE.processActivity);
    // No explicit task attribute: task_id stays empty even though the trace id is known.
    expect(e?.task_id).toBeUndefined();
  });

  it('reads correlation keys from span and resource attributes', () => {
    const span = {
      traceId: TRACE,
      spanId: ROOT,
      name: 'work',
      startTimeUnixNano: NS(T0),
      attributes: attrs({
        'runtrail.task.id': 'task-explicit',
        'gen_ai.conversation.id': 'conv-ignored',
        'runtrail.credential.id': 'ASIAEXAMPLE',
        'http.request.header.x-request-id': ['req-9'],
        'session.id': 'sess-1',
        'client.address': '10.0.0.7',
        'enduser.id': 'alice',
        'user_agent.original': 'curl/8',
      }),
    };
    const [e] = parseJson(traceRequest([span], { 'spiffe.id': 'spiffe://prod/ns/agents/sa/bank', 'host.name': 'node-1' })).events;
    expect(e).toMatchObject({
      task_id: 'task-explicit',
      workload_id: 'spiffe://prod/ns/agents/sa/bank',
      credential_id: 'ASIAEXAMPLE',
      request_id: 'req-9',
      session_id: 'sess-1',
      src_ip: '10.0.0.7',
      principal: 'alice',
      host: 'node-1',
      user_agent: 'curl/8',
      source: 'agent',
    });
  });

  it('turns an invoke_agent span under another agent into a delegation', () => {
    const sub = 'aaaaaaaaaaaaaaaa';
    const handoff = 'bbbbbbbbbbbbbbbb';
    const subTool = 'cccccccccccccccc';
    const req = traceRequest([
      {
        traceId: TRACE,
        spanId: ROOT,
        name: 'invoke_agent planner',
        startTimeUnixNano: NS(T0),
        attributes: attrs({ 'gen_ai.operation.name': 'invoke_agent', 'gen_ai.agent.name': 'planner', 'gen_ai.conversation.id': 'task-1' }),
      },
      // The sub-agent's tool span comes before its parent: the adapter must not depend on order.
      {
        traceId: TRACE,
        spanId: subTool,
        parentSpanId: sub,
        name: 'execute_tool transfer',
        startTimeUnixNano: NS(T0 + 30),
        attributes: attrs({ 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'transfer' }),
      },
      {
        traceId: TRACE,
        spanId: handoff,
        parentSpanId: ROOT,
        name: 'execute_tool ask_payments',
        startTimeUnixNano: NS(T0 + 10),
        attributes: attrs({ 'gen_ai.operation.name': 'execute_tool' }),
      },
      {
        traceId: TRACE,
        spanId: sub,
        parentSpanId: handoff,
        name: 'invoke_agent payments',
        startTimeUnixNano: NS(T0 + 20),
        endTimeUnixNano: NS(T0 + 40),
        attributes: attrs({
          'gen_ai.operation.name': 'invoke_agent',
          'gen_ai.agent.name': 'payments',
          'gen_ai.agent.id': 'pay-1',
          'gen_ai.conversation.id': 'task-2',
        }),
      },
    ]);
    const res = parseJson(req);
    expect(res.rejected).toEqual([]);
    // Only the root starts a task; the nested agent span has an end time but emits no task.ended.
    expect(res.events.filter((e) => e.type === EVENT_TYPE.taskStarted)).toHaveLength(1);
    expect(res.events.filter((e) => e.type === EVENT_TYPE.taskEnded)).toHaveLength(0);
    const delegation = only(res.events, (e) => e.span_id === sub);
    expect(delegation).toMatchObject({
      type: EVENT_TYPE.agentDelegation,
      task_id: 'task-1',
      agent_id: 'planner',
      agent_name: 'planner',
      delegation: { to_agent_id: 'pay-1', to_agent_name: 'payments', to_task_id: 'task-2' },
    });
    const handoffEvent = only(res.events, (e) => e.span_id === handoff);
    expect(handoffEvent).toMatchObject({ task_id: 'task-1', agent_name: 'planner', tool: { name: 'ask_payments' } });
    // Work below the sub-agent belongs to the sub-agent and its own task.
    const subToolEvent = only(res.events, (e) => e.span_id === subTool);
    expect(subToolEvent).toMatchObject({ task_id: 'task-2', agent_id: 'pay-1', agent_name: 'payments' });
  });

  it('maps MCP tools/call spans, with annotations as booleans or as a JSON string', () => {
    const client = {
      traceId: TRACE,
      spanId: TOOL_OK,
      name: 'tools/call delete_file',
      kind: 3,
      startTimeUnixNano: NS(T0),
      attributes: attrs({
        'mcp.method.name': 'tools/call',
        'mcp.session.id': 'mcp-sess-1',
        'gen_ai.tool.name': 'delete_file',
        'gen_ai.tool.call.arguments': '{"path":"/etc/passwd"}',
        'server.address': 'files.internal',
        'mcp.tool.annotations.destructiveHint': true,
        'mcp.tool.annotations.readOnlyHint': false,
      }),
    };
    const server = {
      traceId: TRACE,
      spanId: TOOL_ERR,
      parentSpanId: TOOL_OK,
      name: 'tools/call list_dir',
      kind: 2,
      startTimeUnixNano: NS(T0 + 1),
      attributes: attrs({
        'mcp.method.name': 'tools/call',
        'mcp.server.name': 'fs-server',
        'mcp.tool.annotations': '{"readOnlyHint":true,"openWorldHint":false,"title":"List"}',
      }),
    };
    const res = parseJson(traceRequest([client, server]));
    expect(res.rejected).toEqual([]);
    const [c, s] = res.events as [CanonicalEvent, CanonicalEvent];
    expect(c).toMatchObject({
      type: EVENT_TYPE.toolCall,
      source: 'agent',
      action: 'tool:delete_file',
      session_id: 'mcp-sess-1',
      tool: { name: 'delete_file', arguments: '{"path":"/etc/passwd"}', server: 'files.internal', annotations: { destructiveHint: true, readOnlyHint: false } },
    });
    // The server side of the call: tool name from the span name, hints from the JSON string.
    expect(s).toMatchObject({
      type: EVENT_TYPE.toolCall,
      source: 'workload',
      action: 'tool:list_dir',
      tool: { name: 'list_dir', server: 'fs-server', annotations: { readOnlyHint: true, openWorldHint: false } },
    });
    expect(s.tool?.annotations).not.toHaveProperty('title');
  });

  it('classifies HTTP client, database and AWS SDK spans', () => {
    const base = { traceId: TRACE, startTimeUnixNano: NS(T0) };
    const res = parseJson(
      traceRequest([
        {
          ...base,
          spanId: '0000000000000001',
          name: 'POST',
          kind: 3,
          attributes: attrs({ 'http.request.method': 'POST', 'url.full': 'https://evil.example/upload', 'server.address': 'evil.example', 'server.port': 443 }),
        },
        { ...base, spanId: '0000000000000002', name: 'SELECT', kind: 3, attributes: attrs({ 'db.system.name': 'postgresql', 'db.namespace': 'bank', 'db.collection.name': 'accounts', 'db.operation.name': 'SELECT' }) },
        {
          ...base,
          spanId: '0000000000000003',
          name: 'S3.GetObject',
          kind: 3,
          attributes: attrs({ 'rpc.system': 'aws-api', 'rpc.service': 'S3', 'rpc.method': 'GetObject', 'aws.s3.bucket': 'payroll', 'aws.s3.key': 'q3.csv', 'aws.request_id': 'REQ123' }),
        },
        { ...base, spanId: '0000000000000004', name: 'compute', kind: 1, attributes: attrs({ 'gen_ai.agent.name': 'planner' }) },
      ]),
    );
    expect(res.rejected).toEqual([]);
    const [http, db, aws, other] = res.events as [CanonicalEvent, CanonicalEvent, CanonicalEvent, CanonicalEvent];
    expect(http).toMatchObject({
      source: 'workload',
      type: EVENT_TYPE.networkActivity,
      action: 'http:POST',
      resources: [{ type: 'url', id: 'https://evil.example/upload' }],
      network: { dst_ip: 'evil.example', dst_port: 443, protocol: 'http', direction: 'outbound' },
    });
    expect(db).toMatchObject({ type: EVENT_TYPE.resourceAccess, action: 'db:SELECT', resources: [{ type: 'db', id: 'bank/accounts' }] });
    expect(aws).toMatchObject({
      type: EVENT_TYPE.resourceAccess,
      action: 's3:GetObject',
      request_id: 'REQ123',
      resources: [{ type: 'AWS::S3::Object', id: 'payroll/q3.csv' }],
    });
    expect(other).toMatchObject({ source: 'agent', type: EVENT_TYPE.processActivity, agent_name: 'planner' });
  });

  describe('malformed input', () => {
    it('rejects only the span whose startTimeUnixNano has the wrong type, naming index and field', () => {
      const req = agentRun();
      const spans = rawSpans(req) as unknown as Json[];
      (spans[2] as Json)['startTimeUnixNano'] = { nanos: 5 };
      const res = parseJson(req);
      expect(res.records).toBe(4);
      expect(res.rejected).toHaveLength(1);
      expect(res.rejected[0]).toMatchObject({ index: 2, field: 'resourceSpans[0].scopeSpans[0].spans[2].startTimeUnixNano' });
      expect(res.rejected[0]?.reason).toMatch(/decimal string/);
      expect(res.events.map((e) => e.span_id)).toEqual([ROOT, ROOT, CHAT, TOOL_ERR]);
    });

    it('counts records across resources and scopes for the rejection index', () => {
      const good = (spanId: string): Json => ({ traceId: TRACE, spanId, name: 'x', startTimeUnixNano: NS(T0) });
      const req = {
        resourceSpans: [
          { scopeSpans: [{ spans: [good('0000000000000001')] }, { spans: [good('0000000000000002'), good('0000000000000003')] }] },
          { scopeSpans: [{ spans: [good('0000000000000004'), { ...good('0000000000000005'), startTimeUnixNano: 'yesterday' }] }] },
        ],
      };
      const res = parseJson(req);
      expect(res.events).toHaveLength(4);
      expect(res.rejected).toEqual([
        { index: 4, field: 'resourceSpans[1].scopeSpans[0].spans[1].startTimeUnixNano', reason: expect.stringContaining('"yesterday"') as unknown as string },
      ]);
    });

    it('rejects a malformed container as one record, in index order with span rejections', () => {
      const span = (spanId: string, start: unknown): Json => ({ traceId: TRACE, spanId, name: 'x', startTimeUnixNano: start });
      const res = parseJson({
        resourceSpans: [
          { scopeSpans: [{ spans: [span('0000000000000001', true)] }] },
          7,
          { scopeSpans: 'none' },
          { resource: { attributes: { 'service.name': 'not a list' } }, scopeSpans: [{ spans: [span('0000000000000002', NS(T0))] }] },
          { scopeSpans: [{ spans: [span('0000000000000003', NS(T0))] }] },
        ],
      });
      expect(res.rejected.map((r) => [r.index, r.field])).toEqual([
        [0, 'resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano'],
        [1, 'resourceSpans[1]'],
        [2, 'resourceSpans[2].scopeSpans'],
        [3, 'resourceSpans[3].resource.attributes'],
      ]);
      expect(res.records).toBe(5);
      expect(res.events.map((e) => e.span_id)).toEqual(['0000000000000003']);
    });

    it('rejects invalid and all-zero trace ids and bad span ids', () => {
      const span = (over: Json): Json => ({ traceId: TRACE, spanId: ROOT, name: 'x', startTimeUnixNano: NS(T0), ...over });
      const res = parseJson(
        traceRequest([
          span({ traceId: 'S/kvNXezTaajzpKdDg5HNg==' }), // base64, as some old exporters sent
          span({ traceId: '0'.repeat(32) }),
          span({ spanId: '123' }),
          span({ parentSpanId: 'zzzzzzzzzzzzzzzz' }),
          span({ traceId: TRACE_B }),
        ]),
      );
      expect(res.rejected.map((r) => [r.index, r.field])).toEqual([
        [0, 'resourceSpans[0].scopeSpans[0].spans[0].traceId'],
        [1, 'resourceSpans[0].scopeSpans[0].spans[1].traceId'],
        [2, 'resourceSpans[0].scopeSpans[0].spans[2].spanId'],
        [3, 'resourceSpans[0].scopeSpans[0].spans[3].parentSpanId'],
      ]);
      expect(res.rejected[0]?.reason).toMatch(/32 hex characters/);
      expect(res.events).toHaveLength(1);
      expect(res.events[0]?.trace_id).toBe(TRACE_B);
    });

    it('rejects a span with malformed attributes but keeps the others', () => {
      const res = parseJson(
        traceRequest([
          { traceId: TRACE, spanId: ROOT, name: 'x', startTimeUnixNano: NS(T0), attributes: [{ value: { stringValue: 'no key' } }] },
          { traceId: TRACE, spanId: CHAT, name: 'y', startTimeUnixNano: NS(T0) },
        ]),
      );
      expect(res.rejected).toEqual([{ index: 0, field: 'resourceSpans[0].scopeSpans[0].spans[0].attributes[0]', reason: expect.any(String) as unknown as string }]);
      expect(res.events.map((e) => e.span_id)).toEqual([CHAT]);
    });

    it('throws BodyError for a truncated JSON body', () => {
      const body = JSON.stringify(agentRun());
      for (const cut of [1, 40, Math.floor(body.length / 2), body.length - 1]) {
        expect(() => otlpTracesAdapter.parse(Buffer.from(body.slice(0, cut)), 'application/json')).toThrow(BodyError);
      }
      // Pretty-printed and truncated: many lines, none a request of its own.
      const pretty = JSON.stringify(agentRun(), null, 2);
      expect(() => otlpTracesAdapter.parse(Buffer.from(pretty.slice(0, pretty.length - 10)), 'application/json')).toThrow(BodyError);
      expect(() => otlpTracesAdapter.parse(Buffer.from('[1,2]'), 'application/json')).toThrow(BodyError);
    });

    it('throws BodyError for an undecodable protobuf body, and for JSON sent as protobuf', () => {
      const bytes = encodeTraceRequestProto(agentRun());
      expect(() => otlpTracesAdapter.parse(Buffer.from(bytes.subarray(0, bytes.length - 5)), 'application/x-protobuf')).toThrow(BodyError);
      expect(() => otlpTracesAdapter.parse(json(agentRun()), 'application/x-protobuf')).toThrow(BodyError);
    });

    it('returns zero events for empty bodies and empty requests', () => {
      for (const [body, type] of [
        [Buffer.alloc(0), 'application/json'],
        [Buffer.from('  \n '), 'application/json'],
        [Buffer.from('{}'), 'application/json'],
        [Buffer.from('{"resourceSpans":[]}'), 'application/json'],
        [Buffer.alloc(0), 'application/x-protobuf'],
      ] as const) {
        expect(otlpTracesAdapter.parse(body, type)).toEqual({ events: [], rejected: [], rejectedCount: 0, records: 0, skipped: 0 });
      }
    });

    it('reads one request per line, numbering records across lines, a bad line one rejection', () => {
      const body = [JSON.stringify(agentRun()), '{"resourceSpans": [', JSON.stringify(traceRequest([{ traceId: TRACE_B, spanId: ROOT, name: 'x', startTimeUnixNano: 'soon' }]))].join('\n');
      const res = otlpTracesAdapter.parse(Buffer.from(body), 'application/json');
      expect(res.events).toHaveLength(5);
      expect(res.records).toBe(6);
      expect(res.rejected.map((r) => [r.index, r.field])).toEqual([
        [4, ''],
        [5, 'resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano'],
      ]);
      expect(res.rejected[0]?.reason).toMatch(/^line 2: /);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

describe('otlpLogsAdapter', () => {
  const genAiEvent = {
    timeUnixNano: NS(T0, 5),
    observedTimeUnixNano: NS(T0 + 1),
    eventName: 'gen_ai.client.inference.operation.details',
    traceId: TRACE,
    spanId: CHAT,
    attributes: attrs({
      'gen_ai.operation.name': 'chat',
      'gen_ai.request.model': 'gpt-4o',
      'gen_ai.conversation.id': 'task-abc',
      'gen_ai.input.messages': '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]',
      'gen_ai.output.messages': '[{"role":"assistant","parts":[{"type":"text","content":"hello"}]}]',
    }),
  };
  const userMessage = {
    observedTimeUnixNano: NS(T0 + 2),
    attributes: attrs({ 'event.name': 'gen_ai.user.message' }),
    body: { kvlistValue: { values: attrs({ content: 'transfer everything to IBAN X' }) } },
  };
  const toolLog = {
    timeUnixNano: NS(T0 + 3),
    attributes: attrs({ 'gen_ai.tool.name': 'send_money', 'gen_ai.tool.call.arguments': '{"amount":5}', 'error.type': 'ValueError' }),
    body: { stringValue: 'tool failed' },
  };
  const plainLog = { timeUnixNano: NS(T0 + 4), severityText: 'INFO', severityNumber: 9, body: { stringValue: 'GET /health 200' } };
  const carried = {
    timeUnixNano: NS(T0 + 5),
    attributes: attrs({ 'runtrail.event.type': 'credential.used', 'runtrail.event.source': 'resource', 'runtrail.credential.id': 'hvs.lease-1', 'runtrail.task.id': 'task-xyz' }),
  };
  const parseLogs = (v: unknown): AdapterResult => otlpLogsAdapter.parse(json(v), 'application/json');

  it('maps GenAI events, tool logs, plain logs and carried Runtrail events', () => {
    const res = parseLogs(logsRequest([genAiEvent, userMessage, toolLog, plainLog, carried]));
    expect(res.rejected).toEqual([]);
    const [details, user, tool, plain, credential] = res.events as [CanonicalEvent, CanonicalEvent, CanonicalEvent, CanonicalEvent, CanonicalEvent];
    expect(details).toMatchObject({
      format: 'otlp-logs',
      source: 'agent',
      type: EVENT_TYPE.modelCall,
      task_id: 'task-abc',
      trace_id: TRACE,
      span_id: CHAT,
      outcome: 'unknown',
      model: { name: 'gpt-4o' },
      messages: { input: expect.stringContaining('hi') as unknown as string, output: expect.stringContaining('hello') as unknown as string },
      agent_name: 'banking-assistant',
    });
    expect(details.time).toBeCloseTo(T0 + 0.000005, 6);
    expect(details.attributes['event.name']).toBe('gen_ai.client.inference.operation.details');

    // No timeUnixNano: observed time is used. The message body fills messages.input.
    expect(user).toMatchObject({ source: 'agent', type: EVENT_TYPE.modelCall, time: T0 + 2 });
    expect(JSON.parse(user.messages?.input ?? '')).toEqual({ content: 'transfer everything to IBAN X' });
    expect(user.attributes['body']).toEqual({ content: 'transfer everything to IBAN X' });

    expect(tool).toMatchObject({
      source: 'agent',
      type: EVENT_TYPE.toolCall,
      action: 'tool:send_money',
      outcome: 'failure',
      tool: { name: 'send_money', arguments: '{"amount":5}', error: 'ValueError' },
    });
    expect(tool.attributes['body']).toBe('tool failed');

    expect(plain).toMatchObject({ source: 'workload', type: EVENT_TYPE.processActivity, outcome: 'unknown' });
    expect(plain.attributes).toMatchObject({ body: 'GET /health 200', 'otel.severity_text': 'INFO', 'resource.service.name': 'banking-assistant' });
    expect(plain.agent_name).toBeUndefined();

    expect(credential).toMatchObject({ source: 'resource', type: EVENT_TYPE.credentialUsed, credential_id: 'hvs.lease-1', task_id: 'task-xyz' });
  });

  it('derives deterministic ids that tell records with different bodies apart', () => {
    const a = parseLogs(logsRequest([genAiEvent, userMessage, toolLog, plainLog, carried])).events.map((e) => e.event_id);
    const b = parseLogs(logsRequest([genAiEvent, userMessage, toolLog, plainLog, carried])).events.map((e) => e.event_id);
    expect(a).toEqual(b);
    expect(new Set(a).size).toBe(a.length);
    const other = parseLogs(logsRequest([{ ...plainLog, body: { stringValue: 'GET /health 500' } }])).events[0]?.event_id;
    expect(other).not.toBe(a[3]);
  });

  it('gives the same events for a protobuf body', () => {
    const req = logsRequest([genAiEvent, userMessage, toolLog, plainLog, carried]);
    const fromProto = otlpLogsAdapter.parse(Buffer.from(encodeLogsRequestProto(req)), 'application/x-protobuf');
    expect(fromProto.rejected).toEqual([]);
    expect(fromProto.events).toEqual(parseLogs(req).events);
  });

  it('rejects a record with no time, an unknown carried type or a bad trace id, keeping the rest', () => {
    const res = parseLogs(
      logsRequest([
        { body: { stringValue: 'when?' } },
        plainLog,
        { ...carried, attributes: attrs({ 'runtrail.event.type': 'tool.called' }) },
        { ...plainLog, traceId: 'xyz' },
        { ...plainLog, traceId: '0'.repeat(32) },
      ]),
    );
    expect(res.rejected.map((r) => [r.index, r.field])).toEqual([
      [0, 'resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano'],
      [2, 'resourceLogs[0].scopeLogs[0].logRecords[2].attributes.runtrail.event.type'],
      [3, 'resourceLogs[0].scopeLogs[0].logRecords[3].traceId'],
    ]);
    expect(res.events).toHaveLength(2);
    // An all-zero trace id is no trace id, not an error.
    expect(res.events[1]?.trace_id).toBeUndefined();
  });

  it('throws BodyError for a truncated body and returns nothing for an empty one', () => {
    const body = JSON.stringify(logsRequest([plainLog]));
    expect(() => otlpLogsAdapter.parse(Buffer.from(body.slice(0, -3)), 'application/json')).toThrow(BodyError);
    expect(otlpLogsAdapter.parse(Buffer.alloc(0), 'application/json').events).toEqual([]);
  });
});
