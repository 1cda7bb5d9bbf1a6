import type { AlertMessage, EvidenceSummary, Incident, NotificationKind } from '../../shared/alert.ts';
import type { TimelineEvent } from '../../shared/event.ts';

/**
 * Links to a task in the API and the timeline page. The page routes on the URL fragment
 * (`/ui#/task/<id>`, see `services/api/ui/app.js`), so that is the link that opens the task.
 */
export function taskLinks(apiBaseUrl: string, taskId: string): AlertMessage['links'] {
  const base = apiBaseUrl.replace(/\/+$/, '');
  const id = encodeURIComponent(taskId);
  return { timeline: `${base}/v1/tasks/${id}/timeline`, ui: `${base}/ui#/task/${id}` };
}

/** The few fields of an evidence event a message shows. */
export function summarizeEvidence(e: TimelineEvent): EvidenceSummary {
  const out: EvidenceSummary = { event_id: e.event_id, time: e.time, source: e.source, type: e.type };
  if (e.agent_id) out.agent_id = e.agent_id;
  if (e.workload_id) out.workload_id = e.workload_id;
  if (e.tool?.name) out.tool = e.tool.name;
  if (e.action) out.action = e.action;
  if (e.resources[0]) out.resource = e.resources[0].id;
  if (e.principal) out.principal = e.principal;
  if (e.outcome !== 'unknown') out.outcome = e.outcome;
  return out;
}

/**
 * Composes the channel-neutral message for one notification. `events` are the incident's evidence
 * events found in storage (any order; at most `evidenceLimit` are shown, in event-time order).
 */
export function composeMessage(
  incident: Incident,
  kind: NotificationKind,
  events: readonly TimelineEvent[],
  opts: { apiBaseUrl: string; evidenceLimit: number; now: number },
): AlertMessage {
  const wanted = new Set(incident.evidence.slice(0, opts.evidenceLimit));
  const shown = events
    .filter((e) => wanted.has(e.event_id))
    .sort((a, b) => a.time - b.time || a.event_id.localeCompare(b.event_id))
    .map(summarizeEvidence);
  return {
    version: 1,
    kind,
    incident: {
      id: incident.id,
      fingerprint: incident.fingerprint,
      status: incident.status,
      severity: incident.severity,
      title: incident.title,
      summary: incident.summary,
      detector: incident.detector,
      rule: incident.rule,
      finding_count: incident.finding_count,
      first_seen: incident.first_seen,
      last_seen: incident.last_seen,
    },
    task_id: incident.task_id,
    agent_id: incident.agent_id,
    workload_id: incident.workload_id,
    evidence: shown,
    evidence_omitted: Math.max(0, incident.evidence.length - shown.length),
    frameworks: incident.tags,
    links: taskLinks(opts.apiBaseUrl, incident.task_id),
    composed_at: opts.now,
  };
}
