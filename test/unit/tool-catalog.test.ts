import { describe, expect, it } from 'vitest';
import { CatalogConfigSchema, ToolCatalog, nameTokens } from '../../detectors/catalog/tool-catalog.ts';

const catalog = (cfg: Record<string, unknown> = {}) => new ToolCatalog(CatalogConfigSchema.parse(cfg));

describe('tool catalog', () => {
  it('splits tool names in any convention', () => {
    expect(nameTokens('sendMoney')).toEqual(['send', 'money']);
    expect(nameTokens('mcp.files-read_all')).toEqual(['mcp', 'files', 'read', 'all']);
  });

  it('infers capabilities of unknown tools from their names and arguments', () => {
    const c = catalog();
    expect([...c.classify({ name: 'wire_funds', arguments: '{"iban":"X","amount":5}' }).capabilities]).toEqual(expect.arrayContaining(['spends_money']));
    expect(c.classify({ name: 'post_to_forum' }).capabilities.has('sends_external')).toBe(true);
    expect(c.classify({ name: 'run_python' }).capabilities.has('executes_code')).toBe(true);
    expect(c.classify({ name: 'grant_role' }).capabilities.has('admin')).toBe(true);
    expect(c.classify({ name: 'get_vault_secret' }).capabilities.has('reads_secrets')).toBe(true);
    // A read verb decides: reading a user list does not administer users.
    const list = c.classify({ name: 'list_users' });
    expect(list.capabilities.has('admin')).toBe(false);
    expect(list.capabilities.has('reads_data')).toBe(true);
    // Argument names reveal a sender even behind a vague name.
    expect(c.classify({ name: 'dispatch', arguments: '{"recipients": ["a@b"], "body": "x"}' }).capabilities.has('sends_external')).toBe(true);
  });

  it('honours MCP annotations', () => {
    const c = catalog();
    const ro = c.classify({ name: 'send_report_preview', annotations: { readOnlyHint: true } });
    expect(ro.capabilities.has('sends_external')).toBe(false);
    expect(ro.source).toBe('annotations');
    expect(c.classify({ name: 'frobnicate', annotations: { destructiveHint: true } }).capabilities.has('writes')).toBe(true);
    expect(c.classify({ name: 'frobnicate', annotations: { openWorldHint: true } }).capabilities.has('sends_external')).toBe(true);
  });

  it('lets policy rules override inference, first match wins', () => {
    const c = catalog({ tools: [{ match: 'internal_*', capabilities: ['reads_data'], untrusted_output: false }, { match: '*', untrusted_output: true }], untrusted_by_default: false });
    const t = c.classify({ name: 'internal_send_metrics' });
    expect([...t.capabilities]).toEqual(['reads_data']);
    expect(t.untrustedOutput).toBe(false);
    expect(t.source).toBe('policy');
    expect(c.classify({ name: 'read_inbox' }).untrustedOutput).toBe(true);
  });

  it('marks content-bearing tools as untrusted even when the default is trusted', () => {
    const c = catalog({ untrusted_by_default: false });
    expect(c.classify({ name: 'read_inbox' }).untrustedOutput).toBe(true);
    expect(c.classify({ name: 'browse_webpage' }).untrustedOutput).toBe(true);
    expect(c.classify({ name: 'get_balance' }).untrustedOutput).toBe(false);
  });
});
