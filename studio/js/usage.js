// usage.js - the org's usage (GET /orgs/{slug}/usage?days=N): totals, what
// is left today, requests and tokens per day as an SVG chart drawn here,
// and a table per agent.
import * as A from './api.js';
import { h, clear, alertBox, showError } from './ui.js';

const NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// One bar chart: values per day, its own scale.
function chart(days, key, cls, title) {
  const W = 640, H = 180, L = 48, B = 26, T = 18;
  const max = Math.max(1, ...days.map((d) => d[key] || 0));
  const bw = (W - L - 8) / Math.max(1, days.length);
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title} per day, highest ${max}`, 'data-chart': key });
  svg.append(s('title', {}, `${title} per day`));
  svg.append(s('text', { x: 4, y: 12 }, title));
  svg.append(s('line', { class: 'axis', x1: L, y1: H - B, x2: W - 4, y2: H - B }));
  svg.append(s('text', { x: 4, y: T + 8 }, String(max)), s('text', { x: 4, y: H - B }, '0'));
  days.forEach((d, i) => {
    const v = d[key] || 0, bh = ((H - B - T) * v) / max;
    const bar = s('rect', { class: cls, x: L + i * bw + 1, y: H - B - bh, width: Math.max(1, bw - 2), height: bh, 'data-date': d.date, 'data-value': v });
    bar.append(s('title', {}, `${d.date}: ${v}`));
    svg.append(bar);
    if (days.length <= 10 || i % Math.ceil(days.length / 8) === 0) svg.append(s('text', { x: L + i * bw + 1, y: H - 8 }, d.date.slice(5)));
  });
  return svg;
}

export function usageView(root) {
  const box = alertBox();
  const sel = h('select', { id: 'days' }, [1, 7, 30, 90].map((d) => h('option', { value: d, text: d + ' day' + (d > 1 ? 's' : '') })));
  sel.value = '7';
  const out = h('div', { id: 'usage' });
  root.append(h('div', { class: 'row' }, h('label', { for: 'days', class: 'inline', text: 'Period' }), sel), box, out);
  const load = async () => {
    clear(out);
    let u;
    try { u = await A.api('GET', A.orgPath('/usage?days=' + sel.value)); } catch (e) { showError(root, e); return; }
    const stat = (label, v, id) => h('div', {}, label, h('b', { id, text: String(v) }));
    out.append(h('div', { class: 'stats' },
      stat('Requests', u.total_requests, 'total-requests'), stat('Tokens', u.total_tokens, 'total-tokens'),
      stat('Daily limit', u.daily_limit, 'daily-limit'), stat('Left today', u.remaining_today, 'remaining-today')));
    const days = (u.by_day || []).slice().sort((a, b) => (a.date < b.date ? -1 : 1));
    out.append(h('h2', { text: 'Per day' }), chart(days, 'requests', 'bar-req', 'Requests'), chart(days, 'tokens', 'bar-tok', 'Tokens'));
    out.append(h('h2', { text: 'Per agent' }), h('div', { class: 'table-wrap' }, h('table', { id: 'by-agent' },
      h('thead', {}, h('tr', {}, ['Agent', 'Requests', 'Tokens'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, (u.by_agent || []).length ? u.by_agent.map((a) => h('tr', { 'data-agent': a.agent },
        h('th', { scope: 'row', text: a.agent }), h('td', { text: String(a.requests) }), h('td', { text: String(a.tokens) })))
        : h('tr', {}, h('td', { colspan: 3, text: 'No runs in this period.' }))))));
  };
  sel.addEventListener('change', load);
  load();
}
