// wizard.js - the five steps of a WizardConfig (SPEC section 5). Each
// "Next" saves the step as a draft (POST on the first, PUT of that step
// after); the server's 422 details go back beside their fields, on the
// step they belong to. The last step deploys and shows the compiled YAML.
import * as A from './api.js';
import { h, clear, field, alertBox, showError, clearErrors, status } from './ui.js';
import { showYaml } from './app.js';

const PROVIDERS = ['openai', 'anthropic', 'groq', 'mistral', 'cohere', 'ollama', 'echo'];
const TOOLS = ['calculator', 'datetime', 'json_parser', 'http_request', 'web_search',
  'text_summarizer', 'translator', 'email_sender', 'file_reader'];
const opt = (list) => [['', '(default)']].concat(list.map((v) => [v, v]));
const STEPS = ['Model', 'Prompt', 'Tools', 'Memory', 'Guardrails and limits'];

function checks(path, legend, values, chosen) {
  return h('fieldset', {},
    h('legend', { text: legend }),
    values.map((v) => h('label', {}, h('input', { type: 'checkbox', name: path, value: v, checked: (chosen || []).includes(v), 'data-field': path + '.' + v }), v)),
    h('p', { class: 'field-error', 'data-error-for': path, hidden: true }));
}

// The form of step n (1..5) filled from wc.
function stepForm(n, wc, editing) {
  const s = wc['step' + n] || {};
  const v = (k) => (s[k] === undefined || s[k] === null ? '' : String(s[k]));
  const models = h('datalist', { id: 'models' }, PROVIDERS.map((p) => h('option', { value: p + '/' })));
  switch (n) {
  case 1: return [
    field({ label: 'Name', field: 'name', required: true, value: wc.name || '', readonly: editing,
      pattern: '[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?', hint: 'Lower-case letters, digits and “-”; cannot change later.' }),
    field({ label: 'Display name', field: 'display_name', value: wc.display_name || '' }),
    field({ label: 'Model', field: 'step1.model', required: true, value: v('model'), list: 'models',
      hint: 'provider/model, e.g. openai/gpt-4o-mini; providers: ' + PROVIDERS.join(', ') }),
    field({ label: 'Fallback model', field: 'step1.fallback_model', value: v('fallback_model'), list: 'models' }),
    field({ label: 'Routing strategy', field: 'step1.routing_strategy', type: 'select', value: v('routing_strategy'),
      options: opt(['cost_optimized', 'latency_optimized', 'quality_first']) }), models];
  case 2: return [
    field({ label: 'System prompt', field: 'step2.system_prompt', type: 'textarea', required: true, value: v('system_prompt') }),
    field({ label: 'Persona', field: 'step2.persona', value: v('persona') }),
    field({ label: 'Tone', field: 'step2.tone', type: 'select', value: v('tone'),
      options: opt(['professional', 'casual', 'technical', 'empathetic']) })];
  case 3: return [
    checks('step3.tools', 'Tools', TOOLS, s.tools),
    field({ label: 'Tool configs (JSON object)', field: 'step3.tool_configs', type: 'textarea',
      value: s.tool_configs ? JSON.stringify(s.tool_configs, null, 2) : '',
      hint: 'e.g. {"http_request": {"allowed_hosts": ["api.example.com"]}}' })];
  case 4: return [
    field({ label: 'Memory', field: 'step4.memory_type', type: 'select', value: v('memory_type'), options: opt(['none', 'conversational']) }),
    field({ label: 'Memory strategy', field: 'step4.memory_strategy', type: 'select', value: v('memory_strategy'), options: opt(['sliding_window', 'token_budget']) }),
    field({ label: 'Window size (turns)', field: 'step4.window_size', type: 'number', min: 1, max: 100, value: v('window_size'), hint: '1 to 100, default 20' })];
  default: return [
    checks('step5.input_guardrails', 'Input guardrails', ['pii_filter', 'content_safety', 'max_length'], s.input_guardrails),
    checks('step5.output_guardrails', 'Output guardrails', ['pii_filter', 'content_safety'], s.output_guardrails),
    field({ label: 'Max tokens per answer', field: 'step5.max_tokens', type: 'number', min: 1, max: 32768, value: v('max_tokens'), hint: '1 to 32768' }),
    field({ label: 'Orchestration', field: 'step5.orchestration', type: 'select', value: v('orchestration'), options: opt(['single_pass', 'react', 'plan_and_execute']) })];
  }
}

// What the form of step n says, as {name?, display_name?, stepN: {...}};
// throws an ApiError-like {message, details} for what the browser can tell.
function collect(form, n) {
  const out = {}, step = {}, details = [];
  for (const el of form.querySelectorAll('[data-field]')) {
    const path = el.dataset.field;
    if (el.type === 'checkbox') continue;
    const val = el.value.trim();
    if (el.required && !val) { details.push({ field: path, problem: 'required' }); continue; }
    if (!val) continue;
    const key = path.replace(/^step\d\./, '');
    if (path === 'name' || path === 'display_name') out[path] = val;
    else if (el.type === 'number') {
      const num = Number(val), lo = Number(el.min), hi = Number(el.max);
      if (!Number.isInteger(num) || num < lo || num > hi) details.push({ field: path, problem: `must be between ${lo} and ${hi}` });
      else step[key] = num;
    } else if (key === 'tool_configs') {
      try { const o = JSON.parse(val); if (!o || typeof o !== 'object' || Array.isArray(o)) throw new Error(); step[key] = o; }
      catch (e) { details.push({ field: path, problem: 'must be a JSON object' }); }
    } else if ((key === 'model' || key === 'fallback_model') && !/^[^/\s]+\/\S+$/.test(val)) {
      details.push({ field: path, problem: 'must be "provider/model"' });
    } else step[key] = val;
  }
  for (const fs of form.querySelectorAll('fieldset')) {
    const boxes = [...fs.querySelectorAll('input[type=checkbox]')];
    if (boxes.length) step[boxes[0].name.replace(/^step\d\./, '')] = boxes.filter((b) => b.checked).map((b) => b.value);
  }
  if (details.length) throw Object.assign(new Error('Please correct the marked fields.'), { details });
  out['step' + n] = step;
  return out;
}

export async function wizardView(root, editing) {
  let wc = { };
  let name = editing;
  let n = 1;
  const box = alertBox();
  const steps = h('ol', { class: 'steps', 'aria-label': 'Steps' });
  const form = h('form', { id: 'wizard', novalidate: true });
  const after = h('div', { id: 'after' });
  root.append(steps, box, form, after);
  if (editing) {
    try { wc = (await A.api('GET', A.orgPath('/agents/' + encodeURIComponent(editing)))).wizard_config || {}; }
    catch (e) { showError(root, e); return; }
  }
  const draw = () => {
    clear(steps); clear(form);
    STEPS.forEach((t, i) => steps.append(h('li', { 'aria-current': i + 1 === n ? 'step' : null, text: `${i + 1}. ${t}` })));
    form.append(h('h2', { id: 'step-title', text: `Step ${n} of 5: ${STEPS[n - 1]}` }), ...stepForm(n, wc, !!name));
    form.append(h('div', { class: 'row' },
      n > 1 ? h('button', { type: 'button', class: 'secondary', id: 'back', text: 'Back', onclick: () => { n--; draw(); } }) : null,
      h('button', { type: 'submit', id: 'next', text: n < 5 ? 'Save and next' : 'Save' })));
    const first = form.querySelector('input:not([readonly]), select, textarea');
    if (first) first.focus();
  };
  const path = () => A.orgPath('/agents/' + encodeURIComponent(name));
  // a detail on another step: go there and show it
  const fail = (e) => {
    const m = (e.details || []).map((d) => /^step(\d)\./.exec(d.field)).find(Boolean);
    const target = m ? Number(m[1]) : ((e.details || []).some((d) => d.field === 'name') ? 1 : n);
    if (target !== n) { n = target; draw(); }
    showError(root, e);
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(root);
    let part;
    try { part = collect(form, n); } catch (e) { showError(root, e); return; }
    try {
      if (!name) {
        await A.api('POST', A.orgPath('/agents'), part);
        name = part.name;
        history.replaceState(null, '', '#/edit/' + encodeURIComponent(name));
      } else {
        delete part.name;
        await A.api('PUT', path(), part);
      }
      Object.assign(wc, part);
      status(`Draft saved (step ${n}).`);
      if (n < 5) { n++; draw(); } else finish();
    } catch (e) { fail(e); }
  });
  const finish = () => {
    clear(after);
    const preview = h('div', {});
    after.append(h('div', { class: 'panel' },
      h('p', { text: `${name} is saved as a draft.` }),
      h('div', { class: 'row' },
        h('button', { type: 'button', id: 'deploy', text: 'Deploy', onclick: async () => {
          try {
            const r = await A.api('POST', path() + '/deploy');
            status(`Deployed as ${r.agent_id}.`);
            await showYaml(name, preview);
          } catch (e) { fail(e); }
        } }),
        h('a', { class: 'button secondary', href: '#/agents', text: 'Back to agents' }))), preview);
    after.querySelector('#deploy').focus();
  };
  draw();
}
