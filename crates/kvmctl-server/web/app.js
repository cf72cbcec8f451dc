// kvmctl web console (ADR 0013): a plain ES module over the daemon's REST API. It renders
// with DOM methods and text nodes only: no data ever becomes markup.

const main = document.getElementById('main');
let me = null; // the session: { user, expires_at, password_change }
let events = null; // the EventSource of /v1/events
const vms = new Map(); // name -> Vm, for the dashboard's live updates

// ---------------------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
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

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)kvmctl_csrf=([0-9a-f]+)/);
  return m ? m[1] : '';
}

class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.field = body.field || null;
  }
}

async function api(method, path, body) {
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
    if (r.status === 401 && me && path !== '/v1/session') {
      me = null;
      route();
    }
    throw new ApiError(r.status, data);
  }
  return data;
}

// A text answer (the console log).
async function apiText(path) {
  const r = await fetch(path, { credentials: 'same-origin' });
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => ({})));
  return r.text();
}

let toastTimer;
function toast(text) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('show'), 3500);
}

// Shows the page of `hash` (also when it is the current one).
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function mib(n) { return n >= 1024 ? `${+(n / 1024).toFixed(1)} GiB` : `${n} MiB`; }
function page(title, ...children) {
  main.replaceChildren(el('h1', {}, title), ...children.filter((c) => c !== null && c !== undefined));
  main.focus();
}

// A form whose submit calls `send`; API field errors show under their field.
function form(fields, submitText, send) {
  const errors = {};
  const general = el('p', { class: 'error', role: 'alert' });
  const f = el('form', { class: 'card', novalidate: true });
  for (const fd of fields) {
    const id = `f-${fd.name}`;
    const input = fd.input || el(fd.multiline ? 'textarea' : 'input', {
      id, name: fd.name, type: fd.type || 'text', autocomplete: fd.autocomplete || 'off', required: fd.required,
    });
    input.id = id;
    input.name = fd.name;
    errors[fd.name] = el('div', { class: 'field-error', id: `${id}-error` });
    input.setAttribute('aria-describedby', `${id}-error`);
    f.append(el('label', { for: id }, fd.label), input, errors[fd.name]);
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

// ---------------------------------------------------------------------------- pages

function loginPage() {
  document.getElementById('nav').hidden = true;
  const byPassword = form([
    { name: 'user', label: 'User name', autocomplete: 'username', required: true },
    { name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password', required: true },
  ], 'Log in', async (v) => {
    me = await api('POST', '/v1/session', { user: v.user, password: v.password });
    go('#/');
  });
  byPassword.id = 'login';
  const byToken = form([
    { name: 'token', label: 'API token (kvm_...)', type: 'password', autocomplete: 'off', required: true },
  ], 'Log in with a token', async (v) => {
    me = await api('POST', '/v1/session', { token: v.token });
    go('#/');
  });
  byToken.id = 'login-token';
  page('Log in', byPassword, byToken);
}

function passwordPage() {
  const forced = me.password_change;
  const f = form([
    { name: 'current', label: 'Current password', type: 'password', autocomplete: 'current-password' },
    { name: 'password', label: 'New password (at least 10 characters)', type: 'password', autocomplete: 'new-password' },
  ], 'Change password', async (v) => {
    await api('PUT', `/v1/users/${encodeURIComponent(me.user.name)}/password`, { password: v.password, current: v.current || undefined });
    me.password_change = false;
    toast('Password changed; your other sessions have ended.');
    go('#/');
  });
  f.id = 'password';
  page(forced ? 'Choose your own password first' : 'Change password', f);
}

function bar(label, used, max, fmt = (x) => x) {
  const pct = max ? Math.min(100, Math.round((100 * used) / max)) : 0;
  const fill = el('div', { class: 'fill' });
  fill.style.width = `${pct}%`;
  return el('div', { class: 'bar', role: 'meter', 'aria-label': label, 'aria-valuenow': used, 'aria-valuemin': 0, 'aria-valuemax': max || 0 },
    el('div', {}, label, ': ', fmt(used), max ? ` of ${fmt(max)}` : ' (no limit)'),
    el('div', { class: 'track' }, fill));
}

function sshCommand(vm) {
  const f = (vm.forwards || []).find((x) => x.guest_port === 22 && x.protocol === 'tcp');
  if (f) return `ssh -p ${f.host_port} ${vm.ssh_user}@${location.hostname}`;
  return `kvmctl vm ssh ${vm.name}`;
}

function stateCell(vm) {
  return el('td', { class: `state state-${vm.state}`, 'data-state': vm.state }, vm.state);
}

function vmRow(vm) {
  return el('tr', { 'data-vm': vm.name },
    el('td', {}, el('a', { href: `#/vm/${encodeURIComponent(vm.name)}` }, vm.name)),
    stateCell(vm),
    el('td', {}, vm.ip || el('span', { class: 'muted' }, '-')),
    el('td', { class: 'wide' }, el('code', {}, sshCommand(vm))),
    el('td', { class: 'wide' }, vm.plan || `${vm.vcpus} vCPU, ${mib(vm.memory_mib)}, ${vm.disk_gib} GiB`));
}

async function dashboard() {
  const [list, quota] = await Promise.all([
    api('GET', '/v1/vms'),
    api('GET', `/v1/users/${encodeURIComponent(me.user.name)}/quota`).catch(() => null),
  ]);
  vms.clear();
  for (const v of list) vms.set(v.name, v);
  const bars = el('div', { class: 'bars' });
  if (quota && !quota.unlimited) {
    bars.append(
      bar('VMs', quota.used_vms, quota.max_vms),
      bar('vCPUs', quota.used_vcpus, quota.max_vcpus),
      bar('Memory', quota.used_memory_mib, quota.max_memory_mib, mib),
      bar('Disk', quota.used_disk_gib, quota.max_disk_gib, (x) => `${x} GiB`));
  }
  const body = el('tbody', { id: 'vm-rows' }, list.map(vmRow));
  const table = el('table', { id: 'vms' },
    el('thead', {}, el('tr', {}, el('th', {}, 'Name'), el('th', {}, 'State'), el('th', {}, 'Address'),
      el('th', { class: 'wide' }, 'SSH'), el('th', { class: 'wide' }, 'Plan'))),
    body);
  const empty = list.length ? null : el('p', { class: 'muted', id: 'no-vms' }, 'No VMs yet. ', el('a', { href: '#/create' }, 'Create one'), '.');
  page('My VMs', bars, table, empty);
}

async function createPage() {
  const [plans, images] = await Promise.all([api('GET', '/v1/plans'), api('GET', '/v1/images')]);
  const planSel = el('select', {}, plans.filter((p) => p.active).map((p) =>
    el('option', { value: p.name }, `${p.name}: ${p.vcpus} vCPU, ${mib(p.memory_mib)}, ${p.disk_gib} GiB, ${p.price_hourly} ${p.currency}/h`)));
  const imageSel = el('select', {}, images.map((i) => el('option', { value: i.name }, i.name)));
  const f = form([
    { name: 'name', label: 'Name (lowercase letters, digits, -)', required: true },
    { name: 'plan', label: 'Plan', input: planSel },
    { name: 'image', label: 'Image', input: imageSel },
    { name: 'ssh_key', label: 'SSH public key (optional)', multiline: true },
    { name: 'user_data', label: 'cloud-init user-data (optional)', multiline: true },
  ], 'Create', async (v) => {
    const req = { name: v.name, image: v.image, plan: v.plan || undefined };
    if (v.ssh_key && v.ssh_key.trim()) req.ssh_keys = [v.ssh_key.trim()];
    if (v.user_data && v.user_data.trim()) req.user_data = v.user_data;
    const vm = await api('POST', '/v1/vms', req);
    toast(`${vm.name} is being created`);
    go(`#/vm/${encodeURIComponent(vm.name)}`);
  });
  f.id = 'create';
  page('Create a VM', f);
}

// The VM's console log (again on each readiness stage the event stream brings).
function refreshLog(name, log) {
  apiText(`/v1/vms/${encodeURIComponent(name)}/console/log?lines=60`)
    .then((t) => { log.textContent = t; log.scrollTop = log.scrollHeight; })
    .catch((e) => { log.textContent = e.message; });
}

async function vmPage(name) {
  const vm = await api('GET', `/v1/vms/${encodeURIComponent(name)}`);
  vms.set(vm.name, vm);
  const act = (label, path, body, confirmText, cls) => el('button', {
    type: 'button', class: cls || 'plain', 'data-action': label.toLowerCase(),
    onclick: async () => {
      if (confirmText && !window.confirm(confirmText)) return;
      try {
        if (label === 'Delete') {
          await api('DELETE', `/v1/vms/${encodeURIComponent(name)}`);
          toast(`${name} deleted`);
          go('#/');
          return;
        }
        await api('POST', `/v1/vms/${encodeURIComponent(name)}/${path}`, body);
        toast(`${label}: ${name}`);
      } catch (e) {
        toast(e.message);
      }
    },
  }, label);
  const stages = el('ol', { id: 'stages' }, (vm.readiness || []).map((s) => el('li', {}, s.elapsed_ms != null ? `${s.stage} +${(s.elapsed_ms / 1000).toFixed(1)} s` : s.stage, s.detail ? ` (${s.detail})` : '')));
  const forwards = el('ul', {}, (vm.forwards || []).map((f) => el('li', {}, `${f.protocol} host ${f.host_port} \u2192 guest ${f.guest_port}`)));
  const log = el('pre', { class: 'log', id: 'console-log' });
  refreshLog(name, log);
  page(vm.name,
    el('section', { class: 'card' },
      el('p', {}, 'State: ', el('span', { id: 'vm-state', class: `state state-${vm.state}`, 'data-state': vm.state }, vm.state)),
      el('p', {}, 'Address: ', vm.ip || '-', ' \u00b7 SSH: ', el('code', {}, sshCommand(vm))),
      el('p', { class: 'muted' }, `${vm.image}, ${vm.vcpus} vCPU, ${mib(vm.memory_mib)}, ${vm.disk_gib} GiB on ${vm.node}`),
      vm.error ? el('p', { class: 'error' }, vm.error) : null,
      el('div', { class: 'actions' },
        act('Start', 'start', {}),
        act('Stop', 'stop', {}, `Stop ${name}?`),
        act('Reboot', 'reboot', {}, `Reboot ${name}?`),
        act('Delete', null, null, `Delete ${name} and its disk? This cannot be undone.`, 'danger'))),
    el('div', { class: 'actions' },
      el('a', { class: 'button plain', id: 'open-serial', href: `#/vm/${encodeURIComponent(name)}/serial` }, 'Serial console'),
      el('a', { class: 'button plain', id: 'open-vnc', href: `#/vm/${encodeURIComponent(name)}/vnc` }, 'VNC console')),
    el('h2', {}, 'Readiness'), stages,
    el('h2', {}, 'Forwards'), forwards,
    el('h2', {}, 'Console log'), log);
}

// The open console (serial or VNC), closed when the page changes.
let activeConsole = null;
function closeConsole() {
  if (activeConsole) activeConsole.close();
  activeConsole = null;
}

function tool(label, id, onclick) {
  return el('button', { type: 'button', class: 'plain', id, onclick }, label);
}

// A console page: `#/vm/NAME/serial` or `#/vm/NAME/vnc`, `/popout` for a window of its own.
async function consolePage(name, kind, popout) {
  document.body.classList.toggle('popout', popout);
  const status = el('span', { id: 'console-status', role: 'status', 'data-state': 'connecting' }, 'connecting');
  const setStatus = (text, state) => { status.textContent = text; status.dataset.state = state; };
  const screen = el('div', { id: 'console-screen', class: `screen screen-${kind}` });
  const pasteText = el('textarea', { id: 'paste-text', rows: 2, 'aria-label': 'Text to type into the console', placeholder: 'Text to type into the console' });
  const vmHash = `#/vm/${encodeURIComponent(name)}`;
  const tools = el('div', { class: 'actions console-tools' },
    popout ? null : el('a', { href: vmHash }, `\u2190 ${name}`),
    kind === 'vnc' ? tool('Ctrl-Alt-Del', 'ctrl-alt-del', () => activeConsole?.ctrlAltDel()) : null,
    tool('Paste as keystrokes', 'paste', () => { activeConsole?.paste(pasteText.value); pasteText.value = ''; }),
    tool('Full screen', 'fullscreen', () => screen.requestFullscreen?.()),
    popout ? null : tool('Pop out', 'popout', () => {
      closeConsole();
      window.open(`${vmHash}/${kind}/popout`, `kvmctl-${name}-${kind}`, 'popup,width=1040,height=760');
      go(vmHash);
    }),
    status);
  page(`${name}: ${kind === 'vnc' ? 'VNC display' : 'serial console'}`, tools, pasteText, screen);
  const { openConsole } = await import('/ui/consoles.js');
  const c = await openConsole(kind, name, screen, setStatus, (n, k) => api('POST', `/v1/vms/${encodeURIComponent(n)}/console/ticket`, { kind: k }));
  // The page may have changed while the console opened.
  if (document.getElementById('console-screen') === screen) activeConsole = c;
  else c.close();
}

// ---------------------------------------------------------------------------- live updates

function listen() {
  if (events) return;
  events = new EventSource('/v1/events');
  events.addEventListener('vm.state', (ev) => {
    const e = JSON.parse(ev.data);
    const vm = vms.get(e.vm);
    if (vm) vm.state = e.state;
    const row = document.querySelector(`tr[data-vm="${CSS.escape(e.vm)}"]`);
    if (row) row.children[1].replaceWith(stateCell({ state: e.state }));
    else if (location.hash === '#/' || location.hash === '') dashboard().catch(() => {});
    const s = document.getElementById('vm-state');
    if (s && location.hash === `#/vm/${encodeURIComponent(e.vm)}`) {
      s.textContent = e.state;
      s.className = `state state-${e.state}`;
      s.dataset.state = e.state;
    }
  });
  events.addEventListener('vm.stage', (ev) => {
    const e = JSON.parse(ev.data);
    const list = document.getElementById('stages');
    if (list && location.hash === `#/vm/${encodeURIComponent(e.vm)}`) {
      list.append(el('li', {}, e.stage, e.detail ? ` (${e.detail})` : ''));
      const log = document.getElementById('console-log');
      if (log) refreshLog(e.vm, log);
    }
  });
  events.addEventListener('vm.deleted', (ev) => {
    const e = JSON.parse(ev.data);
    vms.delete(e.vm);
    document.querySelector(`tr[data-vm="${CSS.escape(e.vm)}"]`)?.remove();
  });
}

function stopListening() {
  if (events) events.close();
  events = null;
}

// ---------------------------------------------------------------------------- routing

async function route() {
  if (!me) {
    try {
      me = await api('GET', '/v1/session');
    } catch {
      stopListening();
      loginPage();
      return;
    }
  }
  document.getElementById('nav').hidden = false;
  document.getElementById('who').textContent = `${me.user.name} (${me.user.role})`;
  listen();
  const hash = location.hash || '#/';
  closeConsole();
  document.body.classList.remove('popout');
  const consoleHash = hash.match(/^#\/vm\/([^/]+)\/(serial|vnc)(\/popout)?$/);
  try {
    if (me.password_change || hash === '#/password') passwordPage();
    else if (hash === '#/create') await createPage();
    else if (consoleHash) await consolePage(decodeURIComponent(consoleHash[1]), consoleHash[2], !!consoleHash[3]);
    else if (hash.startsWith('#/vm/')) await vmPage(decodeURIComponent(hash.slice(5)));
    else await dashboard();
  } catch (e) {
    page('Error', el('p', { class: 'error' }, e.message));
  }
}

document.getElementById('logout').addEventListener('click', async () => {
  await api('DELETE', '/v1/session').catch(() => {});
  me = null;
  stopListening();
  go('#/');
});
window.addEventListener('hashchange', route);
route();
