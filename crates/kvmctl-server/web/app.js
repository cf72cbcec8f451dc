// kvmctl web console (ADR 0013): plain ES modules over the daemon's REST API. It renders
// with DOM methods and text nodes only: no data ever becomes markup.

import { action, api, apiText, bar, el, enc, form, go, main, mib, page, session, setRouter, table, toast, when } from '/ui/lib.js';

let events = null; // the EventSource of /v1/events
let eventSeq = 0; // state events seen so far
const lastState = new Map(); // VM name -> { state, seq } of its latest state event
const vms = new Map(); // name -> Vm, for the dashboard's live updates

// ---------------------------------------------------------------------------- pages

function loginPage() {
  document.getElementById('nav').hidden = true;
  const byPassword = form([
    { name: 'user', label: 'User name', autocomplete: 'username', required: true },
    { name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password', required: true },
  ], 'Log in', async (v) => {
    session.me = await api('POST', '/v1/session', { user: v.user, password: v.password });
    go('#/');
  });
  byPassword.id = 'login';
  const byToken = form([
    { name: 'token', label: 'API token (kvm_...)', type: 'password', autocomplete: 'off', required: true },
  ], 'Log in with a token', async (v) => {
    session.me = await api('POST', '/v1/session', { token: v.token });
    go('#/');
  });
  byToken.id = 'login-token';
  page('Log in', byPassword, byToken);
}

function passwordPage() {
  const forced = session.me.password_change;
  const f = form([
    { name: 'current', label: 'Current password', type: 'password', autocomplete: 'current-password' },
    { name: 'password', label: 'New password (at least 10 characters)', type: 'password', autocomplete: 'new-password' },
  ], 'Change password', async (v) => {
    await api('PUT', `/v1/users/${encodeURIComponent(session.me.user.name)}/password`, { password: v.password, current: v.current || undefined });
    session.me.password_change = false;
    toast('Password changed; your other sessions have ended.');
    go('#/');
  });
  f.id = 'password';
  page(forced ? 'Choose your own password first' : 'Change password', f);
}

function sshCommand(vm) {
  const f = (vm.forwards || []).find((x) => x.guest_port === 22 && x.protocol === 'tcp');
  if (f) return `ssh -p ${f.host_port} ${vm.ssh_user}@${location.hostname}`;
  return `kvmctl vm ssh ${vm.name}`;
}

function stateCell(vm) {
  return el('td', { class: `state state-${vm.state}`, 'data-state': vm.state }, vm.state);
}

// Unix seconds of the start of this month (UTC).
function monthStart() {
  const d = new Date();
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000;
}

// Cost so far this month per VM name, from the hourly usage records.
async function monthCosts() {
  const rows = await api('GET', `/v1/usage?from=${monthStart()}`).catch(() => []);
  const cost = new Map();
  for (const r of rows) {
    const c = cost.get(r.vm) || { sum: 0, currency: r.currency };
    c.sum += parseFloat(r.cost) || 0;
    cost.set(r.vm, c);
  }
  return cost;
}

function money(c) { return c ? `${c.sum.toFixed(2)} ${c.currency}` : '-'; }

let costs = new Map();

function vmRow(vm) {
  return el('tr', { 'data-vm': vm.name },
    el('td', {}, el('a', { href: `#/vm/${encodeURIComponent(vm.name)}` }, vm.name)),
    stateCell(vm),
    el('td', {}, vm.ip || el('span', { class: 'muted' }, '-')),
    el('td', { class: 'wide' }, el('code', {}, sshCommand(vm))),
    el('td', { class: 'wide' }, vm.plan || `${vm.vcpus} vCPU, ${mib(vm.memory_mib)}, ${vm.disk_gib} GiB`),
    el('td', { class: 'cost' }, money(costs.get(vm.name))));
}

async function dashboard() {
  const [list, quota, cost] = await Promise.all([
    api('GET', '/v1/vms'),
    api('GET', `/v1/users/${encodeURIComponent(session.me.user.name)}/quota`).catch(() => null),
    monthCosts(),
  ]);
  costs = cost;
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
      el('th', { class: 'wide' }, 'SSH'), el('th', { class: 'wide' }, 'Plan'), el('th', {}, 'This month'))),
    body);
  const empty = list.length ? null : el('p', { class: 'muted', id: 'no-vms' }, 'No VMs yet. ', el('a', { href: '#/create' }, 'Create one'), '.');
  page('My VMs', bars, table, empty);
}

async function createPage() {
  const [plans, images, keys, networks] = await Promise.all([
    api('GET', '/v1/plans'), api('GET', '/v1/images'),
    api('GET', `/v1/users/${enc(session.me.user.name)}/ssh-keys`).catch(() => []),
    api('GET', '/v1/networks').catch(() => []),
  ]);
  const netSel = el('select', {}, el('option', { value: '' }, 'the daemon\'s default network'),
    networks.filter((n) => n.state === 'active' || n.managed).map((n) => el('option', { value: n.name }, `${n.name} (${n.mode}${n.subnet ? `, ${n.subnet}` : ''})`)));
  // The profile's keys, each offered (and ticked) for the new VM.
  const keyBoxes = el('fieldset', { id: 'saved-keys', class: 'keys' }, el('legend', {}, 'SSH keys from your profile'),
    keys.length ? keys.map((k) => el('label', { class: 'check' },
      el('input', { type: 'checkbox', name: `key-${k.id}`, value: k.id, checked: true, 'data-key': k.id }), ` ${k.name} `, el('code', {}, k.fingerprint)))
      : el('p', { class: 'muted' }, 'None saved. ', el('a', { href: '#/keys' }, 'Add one to your profile'), ' or paste one below.'));
  const planSel = el('select', {}, plans.filter((p) => p.active).map((p) =>
    el('option', { value: p.name }, `${p.name}: ${p.vcpus} vCPU, ${mib(p.memory_mib)}, ${p.disk_gib} GiB, ${p.price_hourly} ${p.currency}/h`)));
  const os = (i) => [i.template?.os_family, i.template?.os_version].filter(Boolean).join(' ');
  const imageSel = el('select', {}, images.map((i) => el('option', { value: i.name }, os(i) ? `${i.name} (${os(i)})` : i.name)));
  const f = form([
    { name: 'name', label: 'Name (lowercase letters, digits, -)', required: true },
    { name: 'plan', label: 'Plan', input: planSel },
    { name: 'image', label: 'Image', input: imageSel },
    { name: 'network', label: 'Network', input: netSel },
    { name: 'saved_keys', label: '', input: keyBoxes },
    { name: 'ssh_key', label: 'Another SSH public key (optional)', multiline: true },
    { name: 'user_data', label: 'cloud-init user-data (optional)', multiline: true },
  ], 'Create', async (v) => {
    const req = { name: v.name, image: v.image, plan: v.plan || undefined, network: v.network || undefined };
    const chosen = keys.filter((k) => v[`key-${k.id}`]).map((k) => k.public_key);
    if (v.ssh_key && v.ssh_key.trim()) chosen.push(v.ssh_key.trim());
    if (chosen.length) req.ssh_keys = chosen;
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
  // A state change that arrives while the page loads is applied once it is drawn.
  const seq0 = eventSeq;
  const vm = await api('GET', `/v1/vms/${encodeURIComponent(name)}`);
  vms.set(vm.name, vm);
  const stages = el('ol', { id: 'stages' }, (vm.readiness || []).map((s) => el('li', {}, s.elapsed_ms != null ? `${s.stage} +${(s.elapsed_ms / 1000).toFixed(1)} s` : s.stage, s.detail ? ` (${s.detail})` : '')));
  const vmPath = `/v1/vms/${enc(name)}`;
  const again = () => go(`#/vm/${enc(name)}`);
  const power = (label, path, confirmText) => action(label, async () => {
    await api('POST', `${vmPath}/${path}`, {});
    toast(`${label}: ${name}`);
  }, { confirmText });
  const forwards = table('forwards', [
    ['Protocol', (f) => f.protocol],
    ['Host port', (f) => String(f.host_port)],
    ['Guest port', (f) => String(f.guest_port)],
    ['Pool', (f) => f.pool],
    ['', (f) => action('Remove', async () => {
      await api('DELETE', `${vmPath}/forwards/${f.protocol}/${f.host_port}`);
      toast(`forward ${f.host_port} removed`);
      again();
    }, { confirmText: `Remove the forward of host port ${f.host_port}?`, data: `remove-forward-${f.host_port}` })],
  ], vm.forwards || [], (f) => ({ 'data-forward': f.host_port }));
  const addForward = form([
    { name: 'guest_port', label: 'Guest port', type: 'number', required: true },
    { name: 'protocol', label: 'Protocol', input: el('select', {}, el('option', { value: 'tcp' }, 'tcp'), el('option', { value: 'udp' }, 'udp')) },
  ], 'Add forward', async (v) => {
    const f = await api('POST', `${vmPath}/forwards`, { guest_port: Number(v.guest_port), protocol: v.protocol });
    toast(`host port ${f.host_port} \u2192 guest ${f.guest_port}`);
    again();
  });
  addForward.id = 'add-forward';
  const plans = await api('GET', '/v1/plans').catch(() => []);
  const resize = form([
    { name: 'plan', label: 'Plan (a running VM takes a new size at its next start; disks only grow)', input: el('select', {},
      plans.filter((p) => p.active).map((p) => el('option', { value: p.name, selected: p.name === vm.plan }, `${p.name}: ${p.vcpus} vCPU, ${mib(p.memory_mib)}, ${p.disk_gib} GiB, ${p.price_hourly} ${p.currency}/h`))) },
  ], 'Resize', async (v) => {
    if (!window.confirm(`Resize ${name} to plan ${v.plan}?`)) return;
    await api('POST', `${vmPath}/resize`, { plan: v.plan });
    toast(`${name} resized to ${v.plan}`);
    again();
  });
  resize.id = 'resize';
  const snaps = await api('GET', `${vmPath}/snapshots`).catch(() => []);
  const snapshots = table('snapshots', [
    ['Name', (x) => x.name + (x.current ? ' (current)' : '')],
    ['Taken', (x) => when(x.created_at)],
    ['Memory', (x) => (x.memory ? 'yes' : 'no')],
    ['VM was', (x) => x.vm_state],
    ['', (x) => el('span', { class: 'actions' },
      action('Revert', async () => { await api('POST', `${vmPath}/snapshots/${enc(x.name)}/revert`, {}); toast(`${name} reverted to ${x.name}`); again(); },
        { confirmText: `Revert ${name} to ${x.name}? Changes since are lost.`, data: `revert-${x.name}` }),
      action('Delete', async () => { await api('DELETE', `${vmPath}/snapshots/${enc(x.name)}`); toast(`snapshot ${x.name} deleted`); again(); },
        { confirmText: `Delete snapshot ${x.name}?`, cls: 'plain', data: `delete-snapshot-${x.name}` }))],
  ], snaps);
  const takeSnapshot = form([
    { name: 'name', label: 'Snapshot name', required: true },
    { name: 'memory', label: 'Keep memory (a revert resumes the running guest)', input: el('select', {}, el('option', { value: '' }, 'no'), el('option', { value: 'yes' }, 'yes')) },
  ], 'Take snapshot', async (v) => {
    await api('POST', `${vmPath}/snapshots`, { name: v.name, memory: v.memory === 'yes' });
    toast(`snapshot ${v.name} taken`);
    again();
  });
  takeSnapshot.id = 'take-snapshot';
  const log = el('pre', { class: 'log', id: 'console-log' });
  refreshLog(name, log);
  page(vm.name,
    el('section', { class: 'card' },
      el('p', {}, 'State: ', el('span', { id: 'vm-state', class: `state state-${vm.state}`, 'data-state': vm.state }, vm.state)),
      el('p', {}, 'Address: ', vm.ip || '-', ' \u00b7 SSH: ', el('code', {}, sshCommand(vm))),
      el('p', { class: 'muted' }, `${vm.image}, ${vm.vcpus} vCPU, ${mib(vm.memory_mib)}, ${vm.disk_gib} GiB on ${vm.node}`),
      vm.error ? el('p', { class: 'error' }, vm.error) : null,
      el('div', { class: 'actions' },
        power('Start', 'start'),
        power('Stop', 'stop', `Stop ${name}?`),
        power('Reboot', 'reboot', `Reboot ${name}?`),
        action('Delete', async () => {
          await api('DELETE', vmPath);
          toast(`${name} deleted`);
          go('#/');
        }, { confirmText: `Delete ${name} and its disk? This cannot be undone.`, cls: 'danger' }))),
    el('div', { class: 'actions' },
      el('a', { class: 'button plain', id: 'open-serial', href: `#/vm/${encodeURIComponent(name)}/serial` }, 'Serial console'),
      el('a', { class: 'button plain', id: 'open-vnc', href: `#/vm/${encodeURIComponent(name)}/vnc` }, 'VNC console')),
    el('h2', {}, 'Readiness'), stages,
    el('h2', {}, 'Forwards'), forwards, addForward,
    el('h2', {}, 'Size'), resize,
    el('h2', {}, 'Snapshots'), snapshots, takeSnapshot,
    el('h2', {}, 'Console log'), log);
  const later = lastState.get(name);
  if (later && later.seq > seq0) showState(later.state);
}

function showState(state) {
  const s = document.getElementById('vm-state');
  if (!s) return;
  s.textContent = state;
  s.className = `state state-${state}`;
  s.dataset.state = state;
}

// Usage: per VM and day for a month, a chart of the cost per day, the hourly records as CSV.
async function usagePage(month) {
  const now = new Date();
  const [y, m] = (month || `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, '0')}`).split('-').map(Number);
  const from = Date.UTC(y, m - 1, 1) / 1000;
  const to = Date.UTC(y, m, 1) / 1000;
  const rows = await api('GET', `/v1/usage?from=${from}&to=${to}`);
  const days = new Map(); // day -> cost
  const perVm = new Map(); // "vm day" -> { vm, day, hours, cost, currency }
  let currency = '';
  for (const r of rows) {
    const day = r.hour_utc.slice(0, 10);
    const c = parseFloat(r.cost) || 0;
    currency = r.currency;
    days.set(day, (days.get(day) || 0) + c);
    const k = `${r.vm} ${day}`;
    const e = perVm.get(k) || { vm: r.vm, day, hours: 0, running: 0, cost: 0 };
    e.hours += 1;
    if (r.state === 'running') e.running += 1;
    e.cost += c;
    perVm.set(k, e);
  }
  const total = [...days.values()].reduce((a, b) => a + b, 0);
  const picker = el('input', { type: 'month', id: 'usage-month', value: `${y}-${String(m).padStart(2, '0')}`, 'aria-label': 'Month' });
  picker.addEventListener('change', () => go(`#/usage/${picker.value}`));
  const csv = ['vm,owner,node,hour_utc,state,vcpus,memory_mib,disk_gib,plan,price_hourly,cost,currency']
    .concat(rows.map((r) => [r.vm, r.owner, r.node, r.hour_utc, r.state, r.vcpus, r.memory_mib, r.disk_gib, r.plan || '', r.price_hourly, r.cost, r.currency]
      .map((v) => { const t = String(v); return /[",\n]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t; }).join(','))).join('\n') + '\n';
  window.kvmctlUsageCsv = csv; // what the download holds (tests and the browser's console)
  const download = el('a', { class: 'button plain', id: 'usage-csv', download: `kvmctl-usage-${y}-${String(m).padStart(2, '0')}.csv`,
    href: URL.createObjectURL(new Blob([csv], { type: 'text/csv' })) }, 'Download CSV');
  page('Usage',
    el('div', { class: 'actions' }, picker, download),
    el('p', {}, `Total: ${total.toFixed(2)} ${currency}`, ` \u00b7 ${rows.length} VM-hours`),
    chart([...days.entries()].sort(), currency),
    table('usage', [
      ['Day', (e) => e.day], ['VM', (e) => e.vm], ['Hours', (e) => String(e.hours)], ['Running', (e) => String(e.running)],
      ['Cost', (e) => `${e.cost.toFixed(4)} ${currency}`],
    ], [...perVm.values()].sort((a, b) => (a.day === b.day ? a.vm.localeCompare(b.vm) : a.day.localeCompare(b.day)))));
}

// A bar chart of [label, value] pairs as SVG (no chart library).
function chart(points, unit) {
  const ns = 'http://www.w3.org/2000/svg';
  const mk = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; };
  const w = 640; const h = 160; const max = Math.max(0.0001, ...points.map(([, v]) => v));
  const svg = mk('svg', { viewBox: `0 0 ${w} ${h + 20}`, class: 'chart', id: 'usage-chart', role: 'img', 'aria-label': `cost per day in ${unit}` });
  const bw = points.length ? Math.min(40, (w - 10) / points.length) : 0;
  points.forEach(([label, v], i) => {
    const bh = Math.max(1, (v / max) * h);
    const r = mk('rect', { x: 5 + i * bw, y: h - bh, width: Math.max(1, bw - 2), height: bh, class: 'chart-bar' });
    const t = mk('title', {});
    t.textContent = `${label}: ${v.toFixed(4)} ${unit}`;
    r.append(t);
    svg.append(r);
    if (points.length <= 16 || i % 5 === 0) {
      const l = mk('text', { x: 5 + i * bw, y: h + 14, class: 'chart-label' });
      l.textContent = label.slice(8);
      svg.append(l);
    }
  });
  if (!points.length) {
    const t = mk('text', { x: 10, y: h / 2, class: 'chart-label' });
    t.textContent = 'no usage this month';
    svg.append(t);
  }
  return svg;
}

// SSH keys saved in one's profile: the create form offers them.
async function keysPage() {
  const path = `/v1/users/${enc(session.me.user.name)}/ssh-keys`;
  const keys = await api('GET', path);
  const f = form([
    { name: 'name', label: 'Label (like laptop)', required: true },
    { name: 'public_key', label: 'Public key (the contents of ~/.ssh/id_ed25519.pub)', multiline: true, required: true },
  ], 'Save key', async (v) => {
    const k = await api('POST', path, { name: v.name, public_key: v.public_key });
    toast(`key ${k.name} saved`);
    go('#/keys');
  });
  f.id = 'add-key';
  page('SSH keys',
    el('p', { class: 'muted' }, 'Keys saved here are offered when you create a VM; a VM keeps the keys it was made with.'),
    table('keys', [
      ['Label', (k) => k.name], ['Fingerprint', (k) => el('code', {}, k.fingerprint)], ['Added', (k) => when(k.created_at)],
      ['', (k) => action('Remove', async () => { await api('DELETE', `${path}/${enc(k.id)}`); toast(`key ${k.name} removed`); go('#/keys'); },
        { confirmText: `Remove the key ${k.name}?`, data: `remove-key-${k.id}` })],
    ], keys, (k) => ({ 'data-key': k.id })),
    el('h2', {}, 'Add a key'), f);
}

// API tokens: one's own, created (shown once) and revoked here.
async function tokensPage() {
  const tokens = await api('GET', '/v1/tokens');
  const shown = el('div', { id: 'token-new' });
  const f = form([
    { name: 'description', label: 'Description', required: true },
    { name: 'expires_in_days', label: 'Expires after (days; empty: never)', type: 'number' },
  ], 'Create token', async (v) => {
    const t = await api('POST', '/v1/tokens', { description: v.description, expires_in_days: v.expires_in_days ? Number(v.expires_in_days) : undefined });
    await tokensPage();
    document.getElementById('token-new').replaceChildren(el('p', { class: 'card' }, 'Your new token (shown once; keep it now): ', el('code', { id: 'token-secret' }, t.token)));
  });
  f.id = 'create-token';
  page('API tokens',
    el('p', { class: 'muted' }, 'Tokens let scripts and the CLI act as you: KVMCTL_TOKEN=... kvmctl vm list'),
    shown,
    table('tokens', [
      ['Description', (t) => t.description], ['State', (t) => t.state], ['Created', (t) => when(t.created_at)],
      ['Expires', (t) => when(t.expires_at)], ['Last used', (t) => when(t.last_used_at)],
      ['', (t) => (t.state === 'active' ? action('Revoke', async () => { await api('DELETE', `/v1/tokens/${enc(t.id)}`); toast('token revoked'); await tokensPage(); },
        { confirmText: `Revoke the token "${t.description}"? Scripts using it stop working.`, data: `revoke-${t.id}` }) : '')],
    ], tokens, (t) => ({ 'data-token': t.id })),
    el('h2', {}, 'New token'), f);
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
    lastState.set(e.vm, { state: e.state, seq: ++eventSeq });
    const vm = vms.get(e.vm);
    if (vm) vm.state = e.state;
    const row = document.querySelector(`tr[data-vm="${CSS.escape(e.vm)}"]`);
    if (row) row.children[1].replaceWith(stateCell({ state: e.state }));
    else if (location.hash === '#/' || location.hash === '') dashboard().catch(() => {});
    if (location.hash === `#/vm/${encodeURIComponent(e.vm)}`) showState(e.state);
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

// Pages render in the order of the hash changes that asked for them: a slow page never draws
// over a later one. Changes during a render are coalesced into one more pass.
let routing = null;
let routeAgain = false;
function route() {
  if (routing) {
    routeAgain = true;
    return routing;
  }
  routing = (async () => {
    do {
      routeAgain = false;
      await routeOnce();
    } while (routeAgain);
  })().finally(() => { routing = null; });
  return routing;
}

async function routeOnce() {
  if (!session.me) {
    try {
      session.me = await api('GET', '/v1/session');
    } catch {
      stopListening();
      loginPage();
      return;
    }
  }
  document.getElementById('nav').hidden = false;
  document.getElementById('who').textContent = `${session.me.user.name} (${session.me.user.role})`;
  document.getElementById('admin-nav').hidden = session.me.user.role !== 'admin';
  listen();
  const hash = location.hash || '#/';
  closeConsole();
  document.body.classList.remove('popout');
  const consoleHash = hash.match(/^#\/vm\/([^/]+)\/(serial|vnc)(\/popout)?$/);
  try {
    if (session.me.password_change || hash === '#/password') passwordPage();
    else if (hash === '#/create') await createPage();
    else if (hash === '#/usage' || hash.startsWith('#/usage/')) await usagePage(hash.slice(8));
    else if (hash === '#/tokens') await tokensPage();
    else if (hash === '#/keys') await keysPage();
    else if (hash.startsWith('#/admin/')) {
      const { adminPage } = await import('/ui/admin.js');
      await adminPage(hash.slice(8));
    }
    else if (consoleHash) await consolePage(decodeURIComponent(consoleHash[1]), consoleHash[2], !!consoleHash[3]);
    else if (hash.startsWith('#/vm/')) await vmPage(decodeURIComponent(hash.slice(5)));
    else await dashboard();
  } catch (e) {
    page('Error', el('p', { class: 'error' }, e.message));
  }
}

document.getElementById('logout').addEventListener('click', async () => {
  await api('DELETE', '/v1/session').catch(() => {});
  session.me = null;
  stopListening();
  go('#/');
});
setRouter(route);
window.addEventListener('hashchange', route);
route();
