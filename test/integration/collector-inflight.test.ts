import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { startEmbedded, type EmbeddedServer } from '../../services/embedded.ts';

/**
 * The collector bounds the bytes of request bodies it holds at once (`collector.maxInflightBytes`):
 * while a large upload is in progress, another request over the bound is refused with 503 +
 * Retry-After instead of adding its body to memory, and is taken once the first has finished.
 */

let dir: string;
let server: EmbeddedServer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-inflight-'));
  const cfg = parseConfig({ dataDir: dir, collector: { port: 0, maxInflightBytes: 1024 * 1024, retryAfterS: 3 }, api: { port: 0 }, bus: { fsync: false } });
  server = await startEmbedded(cfg, silentLogger());
}, 60_000);

afterAll(async () => {
  await server?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

const line = (id: string) => `${JSON.stringify({ id, source: 'agent', type: 'model.call', time: Date.parse('2026-06-02T09:00:00Z'), task_id: 'task-inflight', attributes: { pad: 'p'.repeat(900) } })}\n`;

describe('collector in-flight bytes', () => {
  it('refuses a request with 503 + Retry-After while a large upload holds the budget, and takes it afterwards', async () => {
    const lines = Array.from({ length: 3000 }, (_, i) => line(`big-${i}`)).join('');
    const big = Buffer.from(lines);
    expect(big.length).toBeGreaterThan(2 * 1024 * 1024);
    const { port } = new URL(server.http.url);
    // A slow shipper: two thirds of its body, then a pause.
    const socket = connect(Number(port), '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    let reply = '';
    socket.on('data', (d: Buffer) => (reply += d.toString()));
    const split = Math.floor((big.length * 2) / 3);
    socket.write(`POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\ncontent-length: ${big.length}\r\nconnection: close\r\n\r\n`);
    socket.write(big.subarray(0, split));
    await new Promise((r) => setTimeout(r, 300));

    const small = () => fetch(`${server.http.url}/v1/events`, { method: 'POST', body: line('small-1'), headers: { 'content-type': 'application/x-ndjson' } });
    const refused = await small();
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('3');
    expect(await refused.json()).toMatchObject({ error: 'backpressure', message: expect.stringMatching(/collector\.maxInflightBytes/) });

    // The upload finishes and is stored; then the refused request goes through.
    // `connection: close`: the server ends the socket once it has answered.
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.write(big.subarray(split));
    await closed;
    expect(reply).toMatch(/^HTTP\/1\.1 200/);
    expect(reply).toContain('"accepted":3000');
    const taken = await small();
    expect(taken.status).toBe(200);
    expect(await taken.json()).toMatchObject({ accepted: 1 });
  });
});
