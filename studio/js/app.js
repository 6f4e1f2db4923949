// app.js - the Studio's entry: sign-in, the hash router (#/agents,
// #/new, #/edit/NAME, #/console/NAME, #/usage, #/org) and the agents list
// with the actions each state allows. Views own their part of <main>.
import * as A from './api.js';
import { h, clear, field, alertBox, showError, status, confirm, when } from './ui.js';
import { wizardView } from './wizard.js';
import { consoleView } from './console.js';
import { usageView } from './usage.js';
import { orgView } from './org.js';

const main = document.getElementById('main');
let leaveView = null;       // cleanup of the current view (the console's socket)

function view(title) {
  if (leaveView) { leaveView(); leaveView = null; }
  status('');
  clear(main);
  document.title = title + ' · Astromesh Studio';
  main.append(h('h1', { text: title }));
  main.focus();
  return main;
}
export function onLeave(fn) { leaveView = fn; }

async function signInView(message) {
  document.getElementById('nav').hidden = true;
  const root = view('Sign in');
  if (message) root.append(h('p', { class: 'alert', role: 'alert', text: message }));
  let cfg = { sign_in: { dev_login: false, api_key: true } };
  try { cfg = await A.publicConfig(); } catch (e) { /* the API key form still works */ }
  if (cfg.sign_in.dev_login) {
    const box = alertBox();
    const form = h('form', { id: 'dev-login', 'aria-label': 'Developer sign-in' },
      h('h2', { text: 'Developer sign-in' }), box,
      field({ label: 'E-mail', field: 'email', type: 'email', required: true, autocomplete: 'email' }),
      field({ label: 'Name', field: 'name', autocomplete: 'name' }),
      h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Sign in' })));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        await A.devLogin(form.email.value.trim(), form.elements.namedItem('name').value.trim());
        signedIn();
      } catch (e) { showError(form, e); }
    });
    root.append(form);
  }
  const box = alertBox();
  const kform = h('form', { id: 'key-login', 'aria-label': 'API key sign-in' },
    h('h2', { text: 'Sign in with an API key' }), box,
    field({ label: 'API key', field: 'api_key', type: 'password', required: true, autocomplete: 'off' }),
    field({ label: 'Organisation slug', field: 'org', required: true }),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: cfg.sign_in.dev_login ? 'secondary' : null, text: 'Use key' })));
  kform.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await A.keyLogin(kform.api_key.value.trim(), kform.org.value.trim());
      signedIn();
    } catch (e) { showError(kform, e); }
  });
  root.append(kform);
}

function signedIn() {
  document.getElementById('who').textContent = 'org ' + A.slug() + (A.usesKey() ? ' (API key)' : '');
  document.getElementById('nav').hidden = false;
  if (location.hash === '' || location.hash === '#/' || location.hash === '#/signin') location.hash = '#/agents';
  else route();
}

const STATE_ACTIONS = {
  draft: ['deploy', 'edit', 'delete'],
  deployed: ['console', 'pause', 'yaml', 'delete'],
  paused: ['deploy', 'edit', 'delete'],
};

async function agentsView() {
  const root = view('Agents');
  const box = alertBox();
  const preview = h('div', { id: 'yaml-preview' });
  root.append(h('div', { class: 'row' }, h('a', { class: 'button', href: '#/new', text: 'New agent' })), box);
  const wrap = h('div', { class: 'table-wrap' });
  root.append(wrap, preview);
  let list;
  try { list = (await A.api('GET', A.orgPath('/agents'))).agents; } catch (e) { showError(root, e); return; }
  if (!list.length) { wrap.append(h('p', { text: 'No agents yet. Create one with “New agent”.' })); return; }
  const act = (name, what) => async () => {
    clear(preview); box.textContent = '';
    const path = A.orgPath('/agents/' + encodeURIComponent(name));
    try {
      if (what === 'edit') { location.hash = '#/edit/' + encodeURIComponent(name); return; }
      if (what === 'console') { location.hash = '#/console/' + encodeURIComponent(name); return; }
      if (what === 'yaml') { return showYaml(name, preview); }
      if (what === 'delete') {
        if (!await confirm(`Delete the agent “${name}”? This cannot be undone.`)) return;
        await A.api('DELETE', path);
        agentsView();
        status(`Agent ${name} deleted.`);
      } else {
        await A.api('POST', path + '/' + what);
        agentsView();
        status(`Agent ${name}: ${what === 'deploy' ? 'deployed' : 'paused'}.`);
      }
    } catch (e) { showError(root, e); }
  };
  const label = { deploy: 'Deploy', pause: 'Pause', edit: 'Edit', delete: 'Delete', console: 'Console', yaml: 'YAML' };
  wrap.append(h('table', { id: 'agents' },
    h('caption', { class: 'hint', text: `${list.length} agent(s) in ${A.slug()}` }),
    h('thead', {}, h('tr', {}, ['Agent', 'State', 'Model', 'Version', 'Last change', 'Actions'].map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, list.map((a) => h('tr', { 'data-agent': a.name },
      h('th', { scope: 'row' }, a.display_name || a.name, a.display_name && a.display_name !== a.name ? h('div', { class: 'meta', text: a.name }) : null),
      h('td', {}, h('span', { class: 'state state-' + a.status, 'data-state': a.status, text: a.status })),
      h('td', { text: a.model || '—' }),
      h('td', { text: a.version ? 'v' + a.version : '—' }),
      h('td', { text: when(a.updated_at || a.created_at) }),
      h('td', { class: 'actions' },
        (STATE_ACTIONS[a.status] || ['delete']).map((w) => h('button', {
          type: 'button', class: w === 'delete' ? 'danger' : (w === 'deploy' || w === 'console' ? null : 'secondary'),
          'data-action': w, 'aria-label': `${label[w]} ${a.name}`, text: label[w], onclick: act(a.name, w) })),
        a.status === 'deployed' ? h('p', { class: 'hint', text: 'Pause it to edit.' }) : null))))));
}

export async function showYaml(name, into) {
  clear(into);
  const resp = await A.request('GET', A.orgPath('/agents/' + encodeURIComponent(name) + '/yaml'));
  const text = await resp.text();
  if (!resp.ok) { let b = null; try { b = JSON.parse(text); } catch (e) { /* not JSON */ } throw new A.ApiError(resp.status, b); }
  into.append(h('h2', { text: `Compiled YAML of ${name}` }), h('pre', { id: 'yaml', tabindex: '0', text }));
}

function route() {
  if (!A.signedIn()) { signInView(''); return; }
  const [, page, arg] = (location.hash || '#/agents').match(/^#\/([a-z]*)\/?(.*)$/) || [];
  const name = arg ? decodeURIComponent(arg) : '';
  if (page === 'new') wizardView(view('New agent'), null);
  else if (page === 'edit' && name) wizardView(view('Edit ' + name), name);
  else if (page === 'console' && name) onLeave(consoleView(view('Console: ' + name), name));
  else if (page === 'usage') usageView(view('Usage'));
  else if (page === 'org') orgView(view('Organisation'));
  else agentsView();
}

A.onSignedOut((msg) => { status(''); signInView(msg); });
document.getElementById('logout').addEventListener('click', () => A.logout());
window.addEventListener('hashchange', route);
route();
