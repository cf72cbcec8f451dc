// kvmctl web console: what every page uses. Rendering is by DOM methods and text nodes
// only (ADR 0013): no data ever becomes markup.

export const main = document.getElementById('main');
// The session: { user, expires_at, password_change } once logged in.
export const session = { me: null };
let router = () => {};
export function setRouter(fn) { router = fn; }

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

export const enc = encodeURIComponent;

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)kvmctl_csrf=([0-9a-f]+)/);
  return m ? m[1] : '';
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.field = body.field || null;
  }
}

export async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (method !== 'GET') opts.headers['x-kvmctl-csrf'] = csrf();
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 204) return null;
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    if (r.status === 401 && session.me && path !== '/v1/session') {
      session.me = null;
      router();
    }
    throw new ApiError(r.status, data);
  }
  return data;
}

// A text answer (the console log).
export async function apiText(path) {
  const r = await fetch(path, { credentials: 'same-origin' });
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => ({})));
  return r.text();
}

let toastTimer;
export function toast(text) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('show'), 3500);
}

// Shows the page of `hash` (also when it is the current one).
export function go(hash) {
  if (location.hash === hash) router();
  else location.hash = hash;
}

export function mib(n) { return n >= 1024 ? `${+(n / 1024).toFixed(1)} GiB` : `${n} MiB`; }
export function when(unix) { return unix ? new Date(unix * 1000).toISOString().replace('T', ' ').slice(0, 16) + ' UTC' : '-'; }

export function page(title, ...children) {
  main.replaceChildren(el('h1', {}, title), ...children.filter((c) => c !== null && c !== undefined));
  main.focus();
}

// A form whose submit calls `send`; API field errors show under their field.
export function form(fields, submitText, send) {
  const errors = {};
  const general = el('p', { class: 'error', role: 'alert' });
  const f = el('form', { class: 'card', novalidate: true });
  for (const fd of fields) {
    const id = `f-${fd.name}`;
    const input = fd.input || el(fd.multiline ? 'textarea' : 'input', {
      id, name: fd.name, type: fd.type || 'text', autocomplete: fd.autocomplete || 'off', required: fd.required, value: fd.value,
    });
    if (!input.id) input.id = id;
    input.name = fd.name;
    errors[fd.name] = el('div', { class: 'field-error', id: `${id}-error` });
    input.setAttribute('aria-describedby', `${id}-error`);
    if (fd.label) f.append(el('label', { for: input.id }, fd.label));
    f.append(input, errors[fd.name]);
  }
  const button = el('button', { type: 'submit' }, submitText);
  f.append(general, button);
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    for (const e of Object.values(errors)) e.textContent = '';
    general.textContent = '';
    button.disabled = true;
    try {
      await send(Object.fromEntries(new FormData(f).entries()));
    } catch (e) {
      const at = e.field && errors[e.field];
      (at || general).textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
  return f;
}

// A button that runs `fn` (after `confirmText` is confirmed), showing its error as a toast.
export function action(label, fn, { confirmText, cls = 'plain', data } = {}) {
  return el('button', {
    type: 'button', class: cls, 'data-action': data || label.toLowerCase(),
    onclick: async () => {
      if (confirmText && !window.confirm(confirmText)) return;
      try {
        await fn();
      } catch (e) {
        toast(e.message);
      }
    },
  }, label);
}

export function bar(label, used, max, fmt = (x) => x) {
  const pct = max ? Math.min(100, Math.round((100 * used) / max)) : 0;
  const fill = el('div', { class: 'fill' });
  fill.style.width = `${pct}%`;
  return el('div', { class: 'bar', role: 'meter', 'aria-label': label, 'aria-valuenow': used, 'aria-valuemin': 0, 'aria-valuemax': max || 0 },
    el('div', {}, label, ': ', fmt(used), max ? ` of ${fmt(max)}` : ' (no limit)'),
    el('div', { class: 'track' }, fill));
}

// A table: `cols` are [heading, (row) => cell content, class?].
export function table(id, cols, rows, rowAttrs = () => ({})) {
  return el('table', { id },
    el('thead', {}, el('tr', {}, cols.map(([h, , cls]) => el('th', { class: cls }, h)))),
    el('tbody', {}, rows.map((r) => el('tr', rowAttrs(r), cols.map(([, f, cls]) => el('td', { class: cls }, f(r)))))));
}
