// org.js - the organisation's people and secrets: members (list, invite,
// remove), API keys (list, create with the secret shown once and a copy
// button, revoke) and provider keys (save; listed masked; remove). Only
// owners and admins may; anyone else sees the API's 403 message.
import * as A from './api.js';
import { h, clear, field, alertBox, showError, confirm, status, when } from './ui.js';

function section(root, title, id) {
  const s = h('section', { id, 'aria-labelledby': id + '-h' }, h('h2', { id: id + '-h', text: title }), alertBox());
  root.append(s);
  return s;
}

function table(cols, rows) {
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, cols.map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: cols.length, text: 'None.' })))));
}

// A section that lists, with a form below it; reload() redraws the list.
function listSection(root, title, id, load, formOf) {
  const sec = section(root, title, id);
  const list = h('div', {});
  sec.append(list);
  const reload = async () => {
    clear(list);
    try { list.append(await load(reload)); } catch (e) { showError(sec, e); }
  };
  const form = formOf(reload, sec);
  if (form) sec.append(form);
  reload();
}

function submitting(form, sec, fn) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try { await fn(); } catch (e) { showError(sec, e); }
  });
  return form;
}

const remove = (what, path, reload, sec) => async () => {
  if (!await confirm(`Remove ${what}?`)) return;
  try { await A.api('DELETE', path); status(`Removed ${what}.`); reload(); } catch (e) { showError(sec, e); }
};

export function orgView(root) {
  listSection(root, 'Members', 'members', async (reload) => {
    const m = (await A.api('GET', A.orgPath('/members'))).members;
    return table(['E-mail', 'Name', 'Role', 'Joined', ''], m.map((x) => h('tr', {},
      h('td', { text: x.email }), h('td', { text: x.name || '' }), h('td', { text: x.role + (x.status === 'invited' ? ' (invited)' : '') }),
      h('td', { text: when(x.joined_at) }),
      h('td', {}, h('button', { type: 'button', class: 'danger', 'aria-label': 'Remove ' + x.email, text: 'Remove',
        onclick: remove(x.email, A.orgPath('/members/' + encodeURIComponent(x.email)), reload, root.querySelector('#members')) })))));
  }, (reload, sec) => {
    const f = h('form', { 'aria-label': 'Invite a member' },
      field({ label: 'E-mail to invite', field: 'email', type: 'email', required: true }),
      field({ label: 'Role', field: 'role', type: 'select', options: [['member', 'member'], ['admin', 'admin']] }),
      h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Invite' })));
    return submitting(f, sec, async () => {
      await A.api('POST', A.orgPath('/members/invite'), { email: f.email.value.trim(), role: f.role.value });
      status('Invitation sent.'); f.reset(); reload();
    });
  });

  listSection(root, 'API keys', 'keys', async (reload) => {
    const k = (await A.api('GET', A.orgPath('/keys'))).keys;
    return table(['Name', 'Prefix', 'Scopes', 'Created', 'Last used', ''], k.map((x) => h('tr', {},
      h('td', { text: x.name }), h('td', { text: x.prefix }), h('td', { text: (x.scopes || []).join(', ') }),
      h('td', { text: when(x.created_at) }), h('td', { text: when(x.last_used_at) }),
      h('td', {}, h('button', { type: 'button', class: 'danger', 'aria-label': 'Revoke key ' + x.name, text: 'Revoke',
        onclick: remove('the key ' + x.name, A.orgPath('/keys/' + encodeURIComponent(x.id)), reload, root.querySelector('#keys')) })))));
  }, (reload, sec) => {
    const shown = h('div', { id: 'new-secret' });
    const f = h('form', { 'aria-label': 'Create an API key' },
      field({ label: 'Key name', field: 'name', required: true }),
      h('fieldset', {}, h('legend', { text: 'Scopes' }),
        h('label', {}, h('input', { type: 'checkbox', name: 'scope', value: 'run', checked: true }), 'run'),
        h('label', {}, h('input', { type: 'checkbox', name: 'scope', value: 'manage' }), 'manage'),
        h('p', { class: 'field-error', 'data-error-for': 'scopes', hidden: true })),
      h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Create key' })), shown);
    return submitting(f, sec, async () => {
      const scopes = [...f.querySelectorAll('input[name=scope]:checked')].map((b) => b.value);
      const k = await A.api('POST', A.orgPath('/keys'), { name: f.elements.namedItem('name').value.trim(), scopes });
      clear(shown);
      const secret = h('code', { class: 'secret', id: 'secret', text: k.secret });
      shown.append(h('div', { class: 'panel', role: 'status' },
        h('p', { text: 'Copy this secret now: it is shown only once.' }), secret,
        h('div', { class: 'row' }, h('button', { type: 'button', class: 'secondary', text: 'Copy', onclick: async () => {
          try { await navigator.clipboard.writeText(k.secret); status('Copied.'); }
          catch (e) { getSelection().selectAllChildren(secret); status('Selected: press Ctrl+C to copy.'); }
        } }))));
      f.elements.namedItem('name').value = ''; reload();
    });
  });

  listSection(root, 'Provider keys', 'providers', async (reload) => {
    const p = (await A.api('GET', A.orgPath('/providers'))).providers;
    return table(['Provider', 'Key', 'Added', ''], p.map((x) => h('tr', {},
      h('td', { text: x.provider }), h('td', { text: x.masked_key }), h('td', { text: when(x.added_at) }),
      h('td', {}, h('button', { type: 'button', class: 'danger', 'aria-label': 'Remove the ' + x.provider + ' key', text: 'Remove',
        onclick: remove('the ' + x.provider + ' key', A.orgPath('/providers/' + encodeURIComponent(x.provider)), reload, root.querySelector('#providers')) })))));
  }, (reload, sec) => {
    const f = h('form', { 'aria-label': 'Save a provider key' },
      field({ label: 'Provider', field: 'provider', type: 'select', options: ['openai', 'anthropic', 'groq', 'mistral', 'cohere', 'ollama'].map((x) => [x, x]) }),
      field({ label: 'Provider API key', field: 'api_key', type: 'password', required: true, autocomplete: 'off' }),
      h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Save key' })));
    return submitting(f, sec, async () => {
      await A.api('POST', A.orgPath('/providers'), { provider: f.provider.value, api_key: f.api_key.value });
      f.api_key.value = ''; status('Provider key saved.'); reload();
    });
  });
}
