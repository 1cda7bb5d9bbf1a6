import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../shared/config.ts';
import type { TimelineEvent } from '../../../shared/event.ts';
import { silentLogger } from '../../../shared/logger.ts';
import { DETECTORS } from '../../../detectors/registry.ts';
import { hashToken, newToken } from '../../../services/api/auth.ts';
import { FindingPageSchema } from '../../../services/api/schemas.ts';
import { startEmbedded, type EmbeddedServer } from '../../../services/embedded.ts';

/**
 * The timeline page end to end in a real browser: Debian's Chromium driven by playwright-core
 * (nothing downloaded). An attack scenario (the tool-chaining detector's injected-wire-transfer
 * timeline, plus an STS credential and the S3 read it made) goes in through the collector with an
 * ingest token; the page, given an analyst token, lists the task, opens it, shows the finding and
 * highlights its evidence events in the swimlanes, and draws the credential -> resource graph.
 * A screenshot goes to test-artifacts/. Without /usr/bin/chromium this test fails: CI installs it.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(process.cwd(), 'test-artifacts');
const T = { ingest: newToken(), analyst: newToken() };
const CREDENTIAL = 'ASIAUIBROWSERTEST001';
const RESOURCE = 'arn:aws:s3:::finance-exports/payments-2026-05.csv';

let dir: string;
let server: EmbeddedServer;
let browser: Browser;

const scenario = DETECTORS.find((d) => d.meta.id === 'tool-chaining')?.fixtures.find((f) => f.name.startsWith('injection-to-action: a supplier e-mail'));
if (!scenario) throw new Error('the tool-chaining injection fixture is missing');
const TASK = scenario.events[0]?.task_id ?? '';

/** A timeline event as a Runtrail-format record (what a shipper would send). */
function record(e: TimelineEvent): Record<string, unknown> {
  const { attribution: _a, join_key: _j, unattributed_reason: _u, ingested_at: _i, late: _l, format: _f, ...rest } = e;
  return rest;
}

/** The workload side of the scenario: an STS credential issued for the task and one S3 read with it. */
function credentialEvents(t0: number): Record<string, unknown>[] {
  return [
    {
      id: 'ui-sts-issue',
      source: 'workload',
      type: 'credential.issued',
      time: t0 + 1000,
      task_id: TASK,
      workload_id: 'spiffe://example.org/ns/agents/sa/finance',
      credential: { id: CREDENTIAL, kind: 'aws-access-key', session_name: TASK, tags: { 'runtrail.task.id': TASK } },
    },
    {
      id: 'ui-s3-read',
      source: 'resource',
      type: 'resource.access',
      time: t0 + 3000,
      credential_id: CREDENTIAL,
      principal: `arn:aws:sts::111122223333:assumed-role/finance/${TASK}`,
      action: 's3:GetObject',
      resources: [{ type: 'AWS::S3::Object', id: RESOURCE, account: '111122223333' }],
    },
  ];
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium); .ci/run does`);
  dir = mkdtempSync(join(tmpdir(), 'runtrail-ui-'));
  const cfg = parseConfig({
    dataDir: dir,
    collector: { port: 0 },
    api: { port: 0, tokens: [{ name: 'shipper', role: 'ingest', sha256: hashToken(T.ingest) }, { name: 'alice', role: 'analyst', sha256: hashToken(T.analyst) }] },
    bus: { fsync: false },
  });
  server = await startEmbedded(cfg, silentLogger());
  const t0 = scenario.events[0]?.time ?? 0;
  const lines = [...scenario.events.map(record), ...credentialEvents(t0)].map((r) => JSON.stringify(r)).join('\n');
  const res = await fetch(`${server.http.url}/v1/events`, { method: 'POST', body: lines, headers: { 'content-type': 'application/x-ndjson', authorization: `Bearer ${T.ingest}` } });
  expect(await res.json()).toMatchObject({ accepted: scenario.events.length + 2, rejected: [] });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await fetch(`${server.api.url}/v1/findings?task=${TASK}`, { headers: { authorization: `Bearer ${T.analyst}` } });
    const page = FindingPageSchema.parse(await r.json());
    if (page.items.some((f) => f.rule === 'injection-to-action')) break;
    if (Date.now() > deadline) throw new Error('the scenario produced no injection-to-action finding');
    await new Promise((r2) => setTimeout(r2, 200));
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // launch() starts Chromium on a fresh, empty profile directory of its own (it refuses --user-data-dir).
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}, 90_000);

afterAll(async () => {
  await browser?.close();
  await server?.shutdown();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('timeline page in Chromium', () => {
  it('asks for a token, lists the attacked task, and shows its finding with the evidence highlighted', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    try {
      await page.goto(`${server.api.url}/ui`);
      await page.locator('#token-input').waitFor({ state: 'visible', timeout: 10_000 });
      await page.fill('#token-input', T.analyst);
      await page.click('#token-form button[type=submit]');

      const row = page.locator(`tr[data-task="${TASK}"]`);
      await row.waitFor({ timeout: 10_000 });
      expect(await row.locator('.sev').textContent()).toMatch(/high|critical/);
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, 'task-list.png') });

      await page.fill('#filters input[name=credential]', CREDENTIAL);
      await page.click('#filters button[type=submit]');
      await page.waitForFunction("document.querySelectorAll('#task-table tbody tr').length === 1");
      expect(await page.locator('#task-table tbody tr').getAttribute('data-task')).toBe(TASK);

      await row.locator('a').click();
      await page.locator('.finding').first().waitFor({ timeout: 10_000 });
      const timeline = (await (await page.request.get(`${server.api.url}/v1/tasks/${TASK}/timeline`, { headers: { authorization: `Bearer ${T.analyst}` } })).json()) as {
        findings: Array<{ rule: string; evidence: string[]; title: string }>;
        events: Array<{ event_id: string; source: string }>;
      };
      const finding = timeline.findings.find((f) => f.rule === 'injection-to-action');
      if (!finding) throw new Error('no injection-to-action finding in the API answer');
      await expect.poll(() => page.locator('.finding-title').allTextContents()).toContain(finding.title);

      // Every event is in its source's lane, in time order; the finding's evidence is highlighted.
      const shown = await page.locator('.ev').evaluateAll((nodes) => nodes.map((n) => n.getAttribute('data-event')));
      expect(shown).toEqual(timeline.events.map((e) => e.event_id));
      const highlighted = await page.locator('.ev.evidence').evaluateAll((nodes) => nodes.map((n) => n.getAttribute('data-event')));
      expect(new Set(highlighted)).toEqual(new Set(timeline.findings.flatMap((f) => f.evidence)));
      expect(highlighted).toEqual(expect.arrayContaining(finding.evidence));
      const resourceLane = await page.locator('.lanes > .cell').evaluateAll((cells) => cells.map((c) => c.textContent ?? ''));
      expect(resourceLane.some((t) => t.includes('s3:GetObject'))).toBe(true);

      await page.locator('.finding', { hasText: finding.title }).click();
      const selected = await page.locator('.ev.selected').evaluateAll((nodes) => nodes.map((n) => n.getAttribute('data-event')));
      expect(selected.sort()).toEqual([...finding.evidence].sort());

      // The credential -> resource graph.
      await expect.poll(() => page.locator(`#graph [data-node="${CREDENTIAL}"]`).count()).toBe(1);
      expect(await page.locator(`#graph [data-node="${RESOURCE}"]`).count()).toBe(1);
      expect(await page.locator(`#graph line[data-edge="${CREDENTIAL} -> ${RESOURCE}"]`).count()).toBe(1);

      const shot = join(ARTIFACTS, 'timeline-task.png');
      await page.screenshot({ path: shot, fullPage: true });
      expect(statSync(shot).size).toBeGreaterThan(10_000);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  }, 60_000);

  it('shows the token form again when the token is refused', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(`${server.api.url}/ui`);
      await page.evaluate("localStorage.setItem('runtrail.token', 'rt_wrong')");
      // The page must send the stored token, and the form come back because the API refused it.
      const refused = page.waitForResponse((r) => r.url().includes('/v1/tasks') && r.request().headers().authorization === 'Bearer rt_wrong', { timeout: 10_000 });
      await page.reload();
      expect((await refused).status()).toBe(401);
      await page.locator('#token-input').waitFor({ state: 'visible', timeout: 10_000 });
      expect(await page.locator('#task-table tbody tr').count()).toBe(0);
    } finally {
      await page.close();
    }
  }, 30_000);
});
