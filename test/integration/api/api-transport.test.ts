import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../../../shared/config.ts';
import type { HttpService } from '../../../shared/http.ts';
import { silentLogger } from '../../../shared/logger.ts';
import { MetricsRegistry } from '../../../shared/metrics.ts';
import { startApiServer } from '../../../services/api/api-server.ts';
import { hashToken, newToken } from '../../../services/api/auth.ts';
import { ClickHouseStore } from '../../../services/storage/store.ts';

/** CORS (off unless configured) and TLS (HTTPS with configured PEM files) on the API server. */

const log = silentLogger();
const TOKEN = newToken();
let dir: string;
let store: ClickHouseStore;
const started: HttpService[] = [];

async function start(api: Record<string, unknown>): Promise<HttpService> {
  const cfg: Readonly<Config> = parseConfig({ dataDir: dir, api: { port: 0, tokens: [{ name: 'alice', role: 'analyst', sha256: hashToken(TOKEN) }], ...api } });
  const s = await startApiServer({ cfg, store, log, metrics: new MetricsRegistry(), readiness: async () => ({ ready: true, checks: {} }) });
  started.push(s);
  return s;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-api-transport-'));
  store = new ClickHouseStore(parseConfig({}).storage, dir, log, new MetricsRegistry());
  await store.start();
}, 60_000);

afterAll(async () => {
  for (const s of started) await s.close();
  await store?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe('CORS', () => {
  it('sends no CORS headers unless origins are configured', async () => {
    const s = await start({});
    const res = await fetch(`${s.url}/v1/tasks`, { headers: { origin: 'https://evil.example', authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    const pre = await fetch(`${s.url}/v1/tasks`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' } });
    expect(pre.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('answers preflights and allows only the configured origins', async () => {
    const s = await start({ corsOrigins: ['https://console.example'] });
    const pre = await fetch(`${s.url}/v1/tasks`, { method: 'OPTIONS', headers: { origin: 'https://console.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('https://console.example');
    expect(pre.headers.get('access-control-allow-headers')).toContain('authorization');
    const ok = await fetch(`${s.url}/v1/tasks`, { headers: { origin: 'https://console.example', authorization: `Bearer ${TOKEN}` } });
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://console.example');
    const other = await fetch(`${s.url}/v1/tasks`, { headers: { origin: 'https://evil.example', authorization: `Bearer ${TOKEN}` } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('TLS', () => {
  it('serves HTTPS with the configured certificate', async () => {
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const s = await start({ tlsCertFile: cert, tlsKeyFile: key });
    expect(s.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const body = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request(`${s.url}/v1/tasks`, { ca: readFileSync(cert), headers: { authorization: `Bearer ${TOKEN}` } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(body).toEqual({ status: 200, text: '{"items":[],"next_cursor":null}' });
    // Plain HTTP to the TLS port is not served.
    await expect(fetch(s.url.replace('https:', 'http:') + '/v1/tasks')).rejects.toThrow();
  });
});
