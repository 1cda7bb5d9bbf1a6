import type { AlertMessage, EvidenceSummary, Incident, NotificationKind } from '../../shared/alert.ts';

/**
 * Links to a task in the API and the timeline page. The page routes on the URL fragment
 * (`/ui#/task/<id>`, see `services/api/ui/app.js`), so that is the link that opens the task.
 */
export function taskLinks(apiBaseUrl: string, taskId: string): AlertMessage['links'] {
  const base = apiBaseUrl.replace(/\/+$/, '');
  const id = encodeURIComponent(taskId);
  return { timeline: `${base}/v1/tasks/${id}/timeline`, ui: `${base}/ui#/task/${id}` };
}

/**
 * Composes the channel-neutral message for one notification. `evidence` holds summaries of the
 * incident's evidence events, from its findings or from storage (any order, others ignored); the
 * first `evidenceLimit` of the incident's evidence are shown, in event-time order.
 */
export function composeMessage(
  incident: Incident,
  kind: NotificationKind,
  evidence: readonly EvidenceSummary[],
  opts: { apiBaseUrl: string; evidenceLimit: number; now: number },
): AlertMessage {
  const wanted = new Set(incident.evidence.slice(0, opts.evidenceLimit));
  const seen = new Set<string>();
  const shown = evidence
    .filter((e) => wanted.has(e.event_id) && !seen.has(e.event_id) && seen.add(e.event_id))
    .sort((a, b) => a.time - b.time || a.event_id.localeCompare(b.event_id));
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
