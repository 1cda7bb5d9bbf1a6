// Runtrail timeline page: plain JavaScript, no build step. Talks only to this server's /v1 API
// with the token the analyst enters (kept in localStorage, sent as a Bearer header). Every value
// from the API is written with textContent or SVG attributes, never as HTML: event data comes
// from agents and may be hostile.
'use strict';

const TOKEN_KEY = 'runtrail.token';
const LANES = ['agent', 'workload', 'resource'];
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

const iso = (ms) => (ms === null || ms === undefined ? '' : new Date(ms).toISOString().replace('T', ' ').replace('Z', ''));

class AuthNeeded extends Error {}

async function api(path) {
  const token = localStorage.getItem(TOKEN_KEY);
  const res = await fetch(path, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (res.status === 401) throw new AuthNeeded('token needed');
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.message || `HTTP ${res.status}`);
  return body;
}

function show(id) {
  for (const v of ['tasks-view', 'task-view', 'auth']) $(v).hidden = v !== id;
}

function fail(err) {
  if (err instanceof AuthNeeded) {
    show('auth');
    $('error').hidden = true;
    $('token-input').focus();
    return;
  }
  $('error').textContent = String(err.message || err);
  $('error').hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Task list

let nextCursor = null;

function filterQuery() {
  const q = new URLSearchParams();
  for (const input of $('filters').elements) {
    if (!input.name) continue;
    if (input.type === 'checkbox') {
      if (input.checked) q.set(input.name, 'true');
    } else if (input.value.trim()) q.set(input.name, input.value.trim());
  }
  return q;
}

function taskRow(t) {
  const sev = t.max_severity ? el('span', { class: `sev sev-${t.max_severity}`, text: t.max_severity }) : null;
  return el(
    'tr',
    { class: t.findings > 0 ? 'has-findings' : '', 'data-task': t.task_id },
    el('td', {}, el('a', { href: `#/task/${encodeURIComponent(t.task_id)}`, text: t.task_id })),
    el('td', { text: iso(t.last_seen) }),
    el('td', { text: String(t.events) }),
    el('td', { text: t.agents.join(', ') }),
    el('td', { text: t.workloads.join(', ') }),
    el('td', {}, t.findings > 0 ? `${t.findings} ` : '0', sev),
  );
}

async function loadTasks(append) {
  const q = filterQuery();
  q.set('limit', '50');
  if (append && nextCursor) q.set('cursor', nextCursor);
  const page = await api(`/v1/tasks?${q}`);
  const body = $('task-table').tBodies[0];
  if (!append) body.replaceChildren();
  for (const t of page.items) body.append(taskRow(t));
  nextCursor = page.next_cursor;
  $('more').hidden = !nextCursor;
  show('tasks-view');
}

// ---------------------------------------------------------------------------------------------
// One task

function eventDetail(e) {
  if (e.tool) return `${e.tool.name}(${e.tool.arguments || ''})`;
  if (e.credential) return `${e.credential.kind} ${e.credential.id}`;
  const res = (e.resources || []).map((r) => r.id).join(', ');
  return [e.action, res].filter(Boolean).join(' ');
}

function renderLanes(events, evidence) {
  const lanes = $('lanes');
  for (const n of [...lanes.querySelectorAll('.cell')]) n.remove();
  for (const e of events) {
    lanes.append(el('div', { class: 'cell time', text: iso(e.time) }));
    for (const lane of LANES) {
      const cell = el('div', { class: 'cell' });
      if (e.source === lane) {
        const marks = evidence.get(e.event_id);
        cell.append(
          el(
            'div',
            { class: `ev${marks ? ' evidence' : ''}`, 'data-event': e.event_id, id: `ev-${e.event_id}` },
            el('div', { class: 'type', text: `${e.type}${e.agent_id ? ` · ${e.agent_id}` : ''}${e.credential_id ? ` · ${e.credential_id}` : ''}` }),
            el('div', { class: 'detail', text: eventDetail(e) }),
            marks ? el('div', { class: 'badge', text: `evidence: ${marks.join(', ')}` }) : null,
          ),
        );
      }
      lanes.append(cell);
    }
  }
}

function renderFindings(findings) {
  const list = $('finding-list');
  list.replaceChildren();
  if (findings.length === 0) list.append(el('li', { class: 'muted', text: 'No findings for this task.' }));
  for (const f of findings) {
    const item = el(
      'li',
      { class: 'finding', 'data-finding': f.id },
      el('span', { class: `sev sev-${f.severity}`, text: f.severity }),
      ' ',
      el('strong', { class: 'finding-title', text: f.title }),
      el('div', { class: 'muted', text: `${f.detector} / ${f.rule} · ${iso(f.time)}` }),
      el('div', { class: 'summary', text: f.summary }),
      el('div', { class: 'evidence-list', text: `Evidence: ${f.evidence.join(', ')}` }),
    );
    item.addEventListener('click', () => {
      for (const n of document.querySelectorAll('.selected')) n.classList.remove('selected');
      item.classList.add('selected');
      for (const id of f.evidence) {
        const ev = $(`ev-${id}`);
        if (ev) ev.classList.add('selected');
      }
      const first = f.evidence.length ? $(`ev-${f.evidence[0]}`) : null;
      if (first) first.scrollIntoView({ block: 'center' });
    });
    list.append(item);
  }
}

/** Credential -> resource edges of the task: from the events that used a credential on a resource. */
function renderGraph(t) {
  const creds = new Set(t.bindings.map((b) => b.credential_id));
  const edges = new Map();
  for (const e of t.events) {
    if (!e.credential_id) continue;
    creds.add(e.credential_id);
    for (const r of e.resources || []) edges.set(`${e.credential_id}\u0000${r.id}`, [e.credential_id, r.id]);
  }
  const resources = [...new Set([...edges.values()].map(([, r]) => r))];
  const left = [...creds];
  const box = $('graph');
  box.replaceChildren();
  if (left.length === 0) {
    box.append(el('p', { class: 'muted', text: 'No credentials in this task.' }));
    return;
  }
  const rowH = 34;
  const w = 900;
  const nodeW = 330;
  const h = Math.max(left.length, resources.length, 1) * rowH + 20;
  const root = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: 'img', 'aria-label': 'credentials to resources' });
  const yOf = (i) => 10 + i * rowH + rowH / 2;
  for (const [c, r] of edges.values()) {
    root.append(svg('line', { x1: nodeW, y1: yOf(left.indexOf(c)), x2: w - nodeW, y2: yOf(resources.indexOf(r)), 'data-edge': `${c} -> ${r}` }));
  }
  const node = (x, y, label, cls) => {
    const g = svg('g', { class: cls, 'data-node': label });
    g.append(svg('rect', { x, y: y - 12, width: nodeW, height: 24, rx: 4 }));
    const text = svg('text', { x: x + 6, y: y + 4 });
    text.textContent = label.length > 44 ? `${label.slice(0, 43)}…` : label;
    const title = svg('title');
    title.textContent = label;
    g.append(text, title);
    root.append(g);
  };
  left.forEach((c, i) => node(0, yOf(i), c, 'node-cred'));
  resources.forEach((r, i) => node(w - nodeW, yOf(i), r, 'node-res'));
  box.append(root);
}

async function loadTask(id) {
  const t = await api(`/v1/tasks/${encodeURIComponent(id)}/timeline`);
  const evidence = new Map();
  for (const f of t.findings) for (const e of f.evidence) evidence.set(e, [...(evidence.get(e) || []), f.rule || f.detector]);
  $('task-title').textContent = `Task ${id}`;
  const s = t.task;
  $('task-summary').textContent = s
    ? `${s.events} events · ${iso(s.first_seen)} → ${iso(s.last_seen)} · agents: ${s.agents.join(', ') || '-'} · workloads: ${s.workloads.join(', ') || '-'}${t.truncated ? ' · timeline truncated' : ''}`
    : '';
  renderFindings(t.findings);
  renderLanes(t.events, evidence);
  renderGraph(t);
  show('task-view');
}

// ---------------------------------------------------------------------------------------------
// Routing and start-up

async function route() {
  $('error').hidden = true;
  const signedIn = Boolean(localStorage.getItem(TOKEN_KEY));
  $('sign-out').hidden = !signedIn;
  const m = /^#\/task\/(.+)$/.exec(location.hash);
  try {
    if (m) await loadTask(decodeURIComponent(m[1]));
    else await loadTasks(false);
  } catch (err) {
    fail(err);
  }
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  localStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
  $('token-input').value = '';
  void route();
});
$('sign-out').addEventListener('click', () => {
  localStorage.removeItem(TOKEN_KEY);
  void route();
});
$('filters').addEventListener('submit', (ev) => {
  ev.preventDefault();
  loadTasks(false).catch(fail);
});
$('more').addEventListener('click', () => loadTasks(true).catch(fail));
window.addEventListener('hashchange', () => void route());
void route();
