// console.js - talk to a deployed agent. "run" goes over the WebSocket
// stream (SPEC section 6: counted; tokens as they arrive); "test" is not
// offered by the stream, so it is POST .../test answered as Server-Sent
// Events (not counted). The session id is kept across turns and modes.
// The WebSocket carries no rate-limit header the page can read, so after
// a run the remaining count is read from usage (remaining_today); a test's
// X-RateLimit-Remaining header is shown as it comes.
import * as A from './api.js';
import { h, alertBox } from './ui.js';

export function consoleView(root, name) {
  let ws = null, current = null, pending = [];
  const box = alertBox();
  const log = h('div', { class: 'transcript', id: 'transcript', role: 'log', 'aria-live': 'polite', tabindex: '0' });
  const session = h('input', { type: 'text', id: 'session', readonly: true, value: '' });
  const remaining = h('output', { id: 'remaining', text: '—' });
  const modeRun = h('input', { type: 'radio', name: 'mode', id: 'mode-run', value: 'run', checked: true });
  const modeTest = h('input', { type: 'radio', name: 'mode', id: 'mode-test', value: 'test' });
  const query = h('textarea', { id: 'query', required: true, rows: 3 });
  const form = h('form', { id: 'console-form' },
    h('fieldset', {}, h('legend', { text: 'Mode' }),
      h('label', {}, modeRun, 'run (counted, WebSocket stream)'),
      h('label', {}, modeTest, 'test (not counted)')),
    h('label', { for: 'query', text: 'Message' }), query,
    h('div', { class: 'row' }, h('button', { type: 'submit', id: 'send', text: 'Send' }),
      h('button', { type: 'button', class: 'secondary', text: 'New session', onclick: () => { session.value = ''; } })));
  root.append(box,
    h('div', { class: 'row' }, h('label', { for: 'session', class: 'inline', text: 'Session' }), session),
    h('p', {}, 'Requests left today (X-RateLimit-Remaining): ', remaining),
    log, form);

  const bubble = (cls, text) => { const b = h('div', { class: 'msg ' + cls, text }); log.append(b); log.scrollTop = log.scrollHeight; return b; };
  const agentBubble = () => { current = { el: bubble('msg-agent', ''), text: h('span', { class: 'answer' }) }; current.el.append(current.text); };
  const done = (d) => {
    if (!current) agentBubble();
    if (d.answer !== undefined && current.text.textContent !== d.answer) current.text.textContent = d.answer;
    current.el.append(h('div', { class: 'meta', text: `${d.tokens_used} tokens · ${d.model}${d.version ? ' · v' + d.version : ''}` }));
    current.el.dataset.done = '1';
    if (d.session_id) session.value = d.session_id;
    current = null;
    form.querySelector('#send').disabled = false;
  };
  const failed = (msg) => { current = null; bubble('msg-error', msg); form.querySelector('#send').disabled = false; };
  const token = (t) => { if (!current) agentBubble(); current.text.textContent += t; log.scrollTop = log.scrollHeight; };

  const remainingFromUsage = async () => {
    try { remaining.textContent = String((await A.api('GET', A.orgPath('/usage?days=1'))).remaining_today); }
    catch (e) { /* an API key without manage scope cannot read usage */ }
  };
  const openWs = () => new Promise((resolve, reject) => {
    const s = new WebSocket(A.streamUrl(name));
    s.onopen = () => resolve(s);
    s.onerror = () => reject(new Error('The stream could not be opened (is the agent deployed?).'));
    s.onclose = () => { if (ws === s) ws = null; if (current) failed('The stream was closed.'); };
    s.onmessage = (ev) => {
      let m; try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === 'token') token(m.content);
      else if (m.type === 'done') { done(m); remainingFromUsage(); }
      else if (m.type === 'error') failed(m.message || m.error);
    };
  });
  const viaStream = async (q) => {
    if (!ws) ws = await openWs();
    const msg = { query: q };
    if (session.value) msg.session_id = session.value;
    ws.send(JSON.stringify(msg));
  };
  const viaTest = async (q) => {
    const body = { query: q };
    if (session.value) body.session_id = session.value;
    const resp = await A.request('POST', A.orgPath('/agents/' + encodeURIComponent(name) + '/test'), body, { Accept: 'text/event-stream' });
    const left = resp.headers.get('X-RateLimit-Remaining');
    if (left !== null) remaining.textContent = left;
    if (!(resp.headers.get('Content-Type') || '').includes('event-stream')) {
      let b = null; try { b = await resp.json(); } catch (e) { /* not JSON */ }
      if (!resp.ok) throw new A.ApiError(resp.status, b);
      done(b); return;
    }
    const reader = resp.body.getReader(), dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
        const ev = (/^event: (.*)$/m.exec(chunk) || [])[1];
        const data = (/^data: (.*)$/m.exec(chunk) || [])[1];
        let m; try { m = JSON.parse(data); } catch (e) { continue; }
        if (ev === 'token') token(m.content);
        else if (ev === 'done') done(m);
        else if (ev === 'error') failed(m.message || m.error);
      }
    }
    if (current) failed('The answer ended early.');
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const q = query.value.trim();
    if (!q) { query.focus(); return; }
    box.textContent = '';
    bubble('msg-user', q);
    query.value = '';
    form.querySelector('#send').disabled = true;
    try { await (modeTest.checked ? viaTest(q) : viaStream(q)); }
    catch (e) { failed(e.message); }
  });
  query.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) form.requestSubmit(); });
  remainingFromUsage();
  query.focus();
  return () => { if (ws) { const s = ws; ws = null; s.close(1000); } };
}
