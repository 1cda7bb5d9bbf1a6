import { describe, expect, it } from 'vitest';
import { CanonicalEventSchema } from '../../shared/event.ts';
import { Redactor, RedactionPolicySchema } from '../../shared/redaction.ts';
import { parsePolicy } from '../../detectors/policy.ts';
import { BENIGN_TEXTS, SECRET_SAMPLES } from '../fixtures/secrets.ts';

const policy = RedactionPolicySchema.parse({});
const redactor = new Redactor({ key: 'test-key-0123456789abcdef', policy });

describe('secret redaction', () => {
  it.each(SECRET_SAMPLES.map((s) => [s.kind, s] as const))('redacts %s', (_kind, s) => {
    const out = redactor.redactText(s.text);
    expect(out).not.toContain(s.secret);
    expect(out).toMatch(/\[REDACTED:hmac:[0-9a-f]{16}\]/);
    // Idempotent: already-redacted text stays as it is.
    expect(redactor.redactText(out)).toBe(out);
  });

  it.each(BENIGN_TEXTS.map((t) => [t]))('keeps text without secrets: %s', (t) => {
    expect(redactor.redactText(t)).toBe(t);
  });

  it('gives the same secret the same marker, and a different key a different one', () => {
    const s = SECRET_SAMPLES.find((x) => x.kind === 'github-token');
    if (!s) throw new Error('corpus lacks a github token');
    const a = redactor.redactText(`first ${s.secret}`).slice(6);
    const b = redactor.redactText(`then ${s.secret}`).slice(5);
    expect(a).toBe(b);
    const other = new Redactor({ key: 'another-key-0123456789', policy });
    expect(other.redactText(s.secret)).not.toBe(a);
  });

  it('redacts tool arguments, results, messages, headers and attributes of an event, and keeps correlation keys', () => {
    const bearer = SECRET_SAMPLES.find((x) => x.kind === 'bearer header')?.secret ?? '';
    const event = CanonicalEventSchema.parse({
      event_id: 'a'.repeat(32),
      source: 'agent',
      type: 'tool.call',
      time: 1,
      format: 'runtrail',
      credential_id: 'ASIAQWERTYUIOP123456',
      tool: { name: 'http_get', arguments: JSON.stringify({ url: 'https://x', headers: { 'X-Api-Key': 'k-123456' }, password: 'pw-123456' }), result: 'aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' },
      messages: { input: `use token ${bearer.length > 0 ? `Bearer ${bearer}` : ''}` },
      process: { cmdline: 'mysqldump --password=hunter2hunter2 prod' },
      attributes: { 'http.request.header.authorization': [`Bearer ${bearer}`], 'aws.access_key_id': 'AKIAIOSFODNN7EXAMPLE', 'db.password': 'pw-123456', 'gen_ai.usage.input_tokens': 12 },
    });
    const out = JSON.stringify(redactor.redactEvent(event));
    for (const secret of ['k-123456', 'pw-123456', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', bearer, 'hunter2hunter2']) expect(out).not.toContain(secret);
    expect(out).toContain('ASIAQWERTYUIOP123456');
    expect(out).toContain('AKIAIOSFODNN7EXAMPLE');
    expect(out).toContain('"gen_ai.usage.input_tokens":12');
    // The same password in the arguments and in an attribute correlates.
    const marker = redactor.marker('pw-123456');
    expect(out.split(marker).length - 1).toBe(2);
  });

  it('redacts a frozen event in a copy', () => {
    const e = Object.freeze(CanonicalEventSchema.parse({ event_id: 'b'.repeat(32), source: 'agent', type: 'tool.call', time: 1, format: 'runtrail', tool: { name: 't', arguments: '{"token":"abcdef123"}' } }));
    const out = redactor.redactEvent(e);
    expect(out).not.toBe(e);
    expect(out.tool?.arguments).not.toContain('abcdef123');
    expect(e.tool?.arguments).toContain('abcdef123');
  });

  it('is configured in the policy: extra patterns and field names, or off', () => {
    const p = parsePolicy({ redaction: { field_names: ['ssn'], patterns: [{ name: 'acme-key', regex: 'ACME-[0-9]{6}' }] } });
    const r = new Redactor({ key: 'test-key-0123456789abcdef', policy: p.redaction });
    expect(r.redactValue({ ssn: '078-05-1120', note: 'key ACME-123456 here' })).toEqual({
      ssn: r.marker('078-05-1120'),
      note: `key ${r.marker('ACME-123456')} here`,
    });
    expect(parsePolicy({}).redaction.enabled).toBe(true);
    expect(parsePolicy({ redaction: { enabled: false } }).redaction.enabled).toBe(false);
    expect(() => parsePolicy({ redaction: { patterns: [{ name: 'bad', regex: '(' }] } })).toThrow(/redaction.patterns.0.regex/);
  });
});
