import type { z } from 'zod';
import type { AlertMessage, NotificationKind } from '../../../shared/alert.ts';
import type { PagerDutyChannelSchema } from '../../../shared/config.ts';
import type { Severity } from '../../../shared/finding.ts';
import { BaseChannel, postJson, type Delivery, type DeliveryResult } from './channel.ts';

/** PagerDuty's four severities. */
const PD_SEVERITY: Readonly<Record<Severity, 'critical' | 'error' | 'warning' | 'info'>> = {
  critical: 'critical',
  high: 'error',
  medium: 'warning',
  low: 'info',
  info: 'info',
};

/** The Events API v2 body for a notification. */
export function pagerDutyEvent(routingKey: string, kind: NotificationKind, m: AlertMessage): Record<string, unknown> {
  const dedup_key = m.incident.fingerprint;
  if (kind === 'resolve') return { routing_key: routingKey, event_action: 'resolve', dedup_key };
  return {
    routing_key: routingKey,
    event_action: 'trigger',
    dedup_key,
    payload: {
      summary: `[${m.incident.severity}] ${m.incident.title}`.slice(0, 1024),
      source: m.workload_id || m.agent_id || 'runtrail',
      severity: PD_SEVERITY[m.incident.severity],
      timestamp: new Date(m.incident.last_seen).toISOString(),
      component: m.incident.detector,
      group: m.task_id,
      class: m.incident.rule,
      custom_details: {
        summary: m.incident.summary,
        incident_id: m.incident.id,
        findings: m.incident.finding_count,
        task_id: m.task_id,
        agent_id: m.agent_id,
        workload_id: m.workload_id,
        frameworks: m.frameworks,
        evidence: m.evidence,
      },
    },
    links: [
      { href: m.links.timeline, text: 'Task timeline (API)' },
      { href: m.links.ui, text: 'Task timeline (UI)' },
    ],
    client: 'Runtrail',
    client_url: m.links.ui,
  };
}

/**
 * PagerDuty Events API v2. A `trigger` pages; an `escalate` sends another trigger with the same
 * `dedup_key` (the incident fingerprint), which PagerDuty folds into the open alert with the new
 * severity; plain updates are not sent (they would only add noise to the alert log); `resolve`
 * resolves.
 */
export class PagerDutyChannel extends BaseChannel<z.infer<typeof PagerDutyChannelSchema>> {
  readonly type = 'pagerduty' as const;

  override accepts(kind: NotificationKind): boolean {
    return kind !== 'update';
  }

  async send(d: Delivery): Promise<DeliveryResult> {
    const body = JSON.stringify(pagerDutyEvent(this.cfg.routingKey, d.kind, d.message));
    await postJson(this.cfg.url, body, { timeoutMs: this.ctx.requestTimeoutMs, now: this.ctx.now });
    return { ref: '' };
  }
}
