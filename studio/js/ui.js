// ui.js - small DOM helpers shared by the views: element building (never
// innerHTML with data, never a style attribute: the CSP forbids it), the
// error box, field errors beside their fields, the confirmation dialog.

// h('button', {class: 'x', onclick: fn, text: 'Go'}, child...) -> Element
export function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'value') e.value = v;
    else if (k === 'checked') e.checked = !!v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined && k !== false)
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

export function clear(node) { while (node.firstChild) node.firstChild.remove(); return node; }

export function status(text) { document.getElementById('status').textContent = text || ''; }

// A labelled input (or select/textarea) with its hint and error slot.
// opts: {label, field, type, hint, options, ...attributes}
let uid = 0;
export function field(opts) {
  const id = 'f' + (++uid);
  const errId = id + '-err', hintId = id + '-hint';
  const { label, field: path, type, hint, options, ...rest } = opts;
  let input;
  if (type === 'select') {
    input = h('select', { id, name: path, 'data-field': path, ...rest },
      options.map(([v, t]) => h('option', { value: v, text: t })));
    if (rest.value !== undefined) input.value = rest.value;
  } else if (type === 'textarea') {
    input = h('textarea', { id, name: path, 'data-field': path, ...rest });
  } else {
    input = h('input', { id, name: path, type: type || 'text', 'data-field': path, ...rest });
  }
  input.setAttribute('aria-describedby', (hint ? hintId + ' ' : '') + errId);
  return h('div', { class: 'field' },
    h('label', { for: id, text: label }), input,
    hint ? h('p', { class: 'hint', id: hintId, text: hint }) : null,
    h('p', { class: 'field-error', id: errId, 'data-error-for': path, hidden: true }));
}

export function clearErrors(root) {
  for (const e of root.querySelectorAll('[data-error-for]')) { e.textContent = ''; e.hidden = true; }
  for (const e of root.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
  for (const e of root.querySelectorAll('.alert')) e.textContent = '';
}

// The input a detail's field path belongs to: the exact path, else the
// longest prefix ("step3.tools[1]" -> "step3.tools").
export function fieldFor(root, path) {
  let p = path;
  while (p) {
    const slot = root.querySelector(`[data-error-for="${CSS.escape(p)}"]`);
    if (slot) return slot;
    const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
    p = cut > 0 ? p.slice(0, cut) : '';
  }
  return null;
}

// Show err (an ApiError or any Error) in root: its message in the alert
// box, each detail beside its field. Returns the details that had no field.
export function showError(root, err) {
  clearErrors(root);
  const box = root.querySelector('.alert');
  const rest = [];
  let first = null;
  for (const d of err.details || []) {
    const slot = fieldFor(root, d.field);
    if (!slot) { rest.push(d); continue; }
    slot.textContent = (slot.textContent ? slot.textContent + '; ' : '') + d.problem;
    slot.hidden = false;
    const input = root.querySelector(`[data-field="${CSS.escape(slot.dataset.errorFor)}"]`);
    if (input) { input.setAttribute('aria-invalid', 'true'); first = first || input; }
  }
  if (box) {
    box.textContent = err.message + rest.map((d) => ` ${d.field}: ${d.problem}.`).join('');
  }
  if (first) first.focus(); else if (box) box.focus();
  return rest;
}

export function alertBox() { return h('div', { class: 'alert', role: 'alert', tabindex: '-1' }); }

// The confirmation dialog. Resolves true when the user confirms.
export function confirm(text) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.returnValue = '';
    dlg.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

export function when(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toISOString().replace('T', ' ').replace(/:\d\d(\.\d+)?Z$/, ' UTC');
}
