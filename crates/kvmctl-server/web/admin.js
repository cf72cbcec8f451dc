// kvmctl web console: the admin pages (nodes, users, plans, images, audit log, gc). They call
// the same admin-only API the CLI does; for anyone else the API answers 403, and the page
// says so.

import { action, api, bar, el, enc, form, go, mib, page, table, toast, when } from '/ui/lib.js';

const PAGES = { nodes, users, plans, images, audit, gc };

export async function adminPage(rest) {
  const [name, ...args] = rest.split('/');
  const f = PAGES[name];
  if (!f) return page('Not found', el('p', {}, 'No such admin page.'));
  return f(...args.map(decodeURIComponent));
}

// Nodes with their capacity and what is allocated, drain and undrain.
async function nodes() {
  const list = await api('GET', '/v1/nodes');
  const again = () => go('#/admin/nodes');
  page('Compute nodes',
    el('div', { id: 'nodes' }, list.map((n) => el('section', { class: 'card node', 'data-node': n.name },
      el('h2', {}, n.name, ' ', el('span', { class: `state state-${n.state}`, 'data-state': n.state }, n.state)),
      el('p', { class: 'muted' }, n.uri, ` \u00b7 ${n.cpus} CPUs, ${mib(n.memory_mib)}, ${n.disk_gib} GiB disk \u00b7 overcommit CPU ${n.cpu_overcommit}, memory ${n.memory_overcommit}`),
      n.error ? el('p', { class: 'error' }, n.error) : null,
      el('div', { class: 'bars' },
        bar('vCPUs allocated', n.allocated_vcpus, n.capacity_vcpus),
        bar('Memory allocated', n.allocated_memory_mib, n.capacity_memory_mib, mib),
        bar('Disk allocated', n.allocated_disk_gib, n.disk_gib, (x) => `${x} GiB`)),
      el('p', {}, `${n.vms} VMs`, n.refreshed_at ? ` \u00b7 capacity read ${when(n.refreshed_at)}` : ''),
      el('div', { class: 'actions' },
        n.state === 'draining'
          ? action('Undrain', async () => { await api('PATCH', `/v1/nodes/${enc(n.name)}`, { state: 'active' }); toast(`${n.name} takes new VMs again`); again(); }, { data: `undrain-${n.name}` })
          : action('Drain', async () => { await api('PATCH', `/v1/nodes/${enc(n.name)}`, { state: 'draining' }); toast(`${n.name} takes no new VMs`); again(); },
            { confirmText: `Drain ${n.name}? It takes no new VMs; its VMs keep running.`, data: `drain-${n.name}` }))))));
}

// Users: create, role, disable, first password, quota, tokens.
async function users(selected) {
  const list = await api('GET', '/v1/users');
  const again = () => go(selected ? `#/admin/users/${enc(selected)}` : '#/admin/users');
  const create = form([
    { name: 'name', label: 'User name', required: true },
    { name: 'role', label: 'Role', input: el('select', {}, el('option', { value: 'user' }, 'user'), el('option', { value: 'admin' }, 'admin')) },
  ], 'Create user', async (v) => {
    await api('POST', '/v1/users', { name: v.name, role: v.role });
    toast(`user ${v.name} created; set a first password`);
    go(`#/admin/users/${enc(v.name)}`);
  });
  create.id = 'create-user';
  const rows = table('users', [
    ['Name', (u) => el('a', { href: `#/admin/users/${enc(u.name)}` }, u.name)],
    ['Role', (u) => u.role],
    ['State', (u) => (u.disabled ? 'disabled' : 'active')],
    ['Custom sizes', (u) => (u.custom_sizing ? 'yes' : 'no')],
    ['Created', (u) => when(u.created_at)],
  ], list, (u) => ({ 'data-user': u.name }));
  let detail = null;
  if (selected) {
    const u = list.find((x) => x.name === selected);
    if (u) detail = await userDetail(u, again);
  }
  page('Users', detail, rows, el('h2', {}, 'New user'), create);
}

async function userDetail(u, again) {
  const path = `/v1/users/${enc(u.name)}`;
  const [quota, tokens] = await Promise.all([api('GET', `${path}/quota`), api('GET', `/v1/tokens?user=${enc(u.name)}`)]);
  const pw = form([
    { name: 'password', label: 'First password (at least 10 characters; changed at their next login)', type: 'password', autocomplete: 'new-password' },
  ], 'Set password', async (v) => {
    await api('PUT', `${path}/password`, { password: v.password });
    toast(`password of ${u.name} set; their sessions ended`);
  });
  pw.id = 'user-password';
  const num = (x) => (x === undefined || x === null ? '' : String(x));
  const q = form([
    { name: 'max_vms', label: 'Most VMs', type: 'number', value: num(quota.max_vms) },
    { name: 'max_vcpus', label: 'Most vCPUs', type: 'number', value: num(quota.max_vcpus) },
    { name: 'max_memory_mib', label: 'Most memory (MiB)', type: 'number', value: num(quota.max_memory_mib) },
    { name: 'max_disk_gib', label: 'Most disk (GiB)', type: 'number', value: num(quota.max_disk_gib) },
    { name: 'max_forwards', label: 'Most port forwards', type: 'number', value: num(quota.max_forwards) },
  ], 'Set quota', async (v) => {
    const req = { reset: [] };
    for (const [k, val] of Object.entries(v)) {
      if (val === '') req.reset.push(k);
      else req[k] = Number(val);
    }
    await api('PUT', `${path}/quota`, req);
    toast(`quota of ${u.name} set`);
    again();
  });
  q.id = 'user-quota';
  return el('section', { class: 'card wide-card', id: 'user-detail', 'data-user': u.name },
    el('h2', {}, u.name),
    el('p', {}, `Role ${u.role}; ${u.disabled ? 'disabled' : 'active'}; created ${when(u.created_at)}`),
    el('div', { class: 'actions' },
      action(u.role === 'admin' ? 'Make user' : 'Make admin', async () => { await api('PATCH', path, { role: u.role === 'admin' ? 'user' : 'admin' }); again(); },
        { confirmText: `Change the role of ${u.name}?`, data: 'role' }),
      action(u.disabled ? 'Enable' : 'Disable', async () => { await api('PATCH', path, { disabled: !u.disabled }); again(); },
        { confirmText: u.disabled ? null : `Disable ${u.name}? Their tokens and sessions stop working.`, data: u.disabled ? 'enable' : 'disable' }),
      action(u.custom_sizing ? 'Plans only' : 'Allow custom sizes', async () => { await api('PATCH', path, { custom_sizing: !u.custom_sizing }); again(); }, { data: 'custom-sizing' })),
    el('div', { class: 'bars' },
      bar('VMs', quota.used_vms, quota.max_vms),
      bar('vCPUs', quota.used_vcpus, quota.max_vcpus),
      bar('Memory', quota.used_memory_mib, quota.max_memory_mib, mib),
      bar('Disk', quota.used_disk_gib, quota.max_disk_gib, (x) => `${x} GiB`),
      bar('Forwards', quota.used_forwards, quota.max_forwards)),
    el('p', { class: 'muted' }, 'Empty fields take the daemon\'s default quota.'),
    q, pw,
    el('h3', {}, 'Tokens'),
    table('user-tokens', [
      ['Description', (t) => t.description], ['State', (t) => t.state], ['Created', (t) => when(t.created_at)], ['Last used', (t) => when(t.last_used_at)],
      ['', (t) => (t.state === 'active' ? action('Revoke', async () => { await api('DELETE', `/v1/tokens/${enc(t.id)}`); again(); },
        { confirmText: `Revoke ${u.name}'s token "${t.description}"?`, data: `revoke-${t.id}` }) : '')],
    ], tokens));
}

// Plans: create, price, retire, bring back.
async function plans() {
  const list = await api('GET', '/v1/plans'); // admins see retired plans too
  const again = () => go('#/admin/plans');
  const create = form([
    { name: 'name', label: 'Name', required: true },
    { name: 'vcpus', label: 'vCPUs', type: 'number', required: true },
    { name: 'memory_mib', label: 'Memory (MiB)', type: 'number', required: true },
    { name: 'disk_gib', label: 'Disk (GiB)', type: 'number', required: true },
    { name: 'price_hourly', label: 'Price per hour (e.g. 0.0125)', required: true },
  ], 'Create plan', async (v) => {
    await api('POST', '/v1/plans', { name: v.name, vcpus: Number(v.vcpus), memory_mib: Number(v.memory_mib), disk_gib: Number(v.disk_gib), price_hourly: v.price_hourly });
    toast(`plan ${v.name} created`);
    again();
  });
  create.id = 'create-plan';
  page('Plans',
    table('plans', [
      ['Name', (p) => p.name], ['Size', (p) => `${p.vcpus} vCPU, ${mib(p.memory_mib)}, ${p.disk_gib} GiB`],
      ['Price', (p) => `${p.price_hourly} ${p.currency}/h`], ['State', (p) => (p.active ? 'active' : 'retired')],
      ['', (p) => el('span', { class: 'actions' },
        action('Price', async () => {
          const price = window.prompt(`New hourly price of ${p.name} (now ${p.price_hourly}); running VMs are charged it from the next hour`, p.price_hourly);
          if (price === null) return;
          await api('PATCH', `/v1/plans/${enc(p.name)}`, { price_hourly: price });
          again();
        }, { data: `price-${p.name}` }),
        p.active
          ? action('Retire', async () => { await api('PATCH', `/v1/plans/${enc(p.name)}`, { active: false }); again(); },
            { confirmText: `Retire ${p.name}? No new VMs take it; existing ones keep it.`, data: `retire-${p.name}` })
          : action('Bring back', async () => { await api('PATCH', `/v1/plans/${enc(p.name)}`, { active: true }); again(); }, { data: `activate-${p.name}` }))],
    ], list, (p) => ({ 'data-plan': p.name })),
    el('h2', {}, 'New plan'), create);
}

async function images() {
  const list = await api('GET', '/v1/images');
  page('Images',
    el('p', { class: 'muted' }, 'Import images with the CLI: kvmctl image import PATH|URL (or kvmctl image build debian-12).'),
    table('images', [
      ['Name', (i) => i.name], ['OS', (i) => [i.template?.os_family, i.template?.os_version].filter(Boolean).join(' ') || '-'], ['Format', (i) => i.format],
      ['Size', (i) => `${(i.virtual_bytes / 2 ** 30).toFixed(1)} GiB (file ${(i.file_bytes / 2 ** 20).toFixed(0)} MiB)`],
      ['Node', (i) => i.node], ['Used by', (i) => String((i.used_by || []).length)], ['Added', (i) => when(i.created_at)],
      ['', (i) => ((i.used_by || []).length ? '' : action('Delete', async () => { await api('DELETE', `/v1/images/${enc(i.name)}`); go('#/admin/images'); },
        { confirmText: `Delete image ${i.name}?`, data: `delete-image-${i.name}` }))],
    ], list, (i) => ({ 'data-image': i.name })));
}

// The audit log, filtered by user and time.
async function audit(query) {
  const params = new URLSearchParams(query || '');
  const user = params.get('user') || '';
  const since = params.get('since') || '';
  const q = new URLSearchParams({ limit: '200' });
  if (user) q.set('user', user);
  if (since) q.set('since', String(Date.parse(`${since}T00:00:00Z`) / 1000));
  const rows = await api('GET', `/v1/audit?${q}`);
  const f = el('form', { class: 'card filters', id: 'audit-filter' },
    el('label', { for: 'audit-user' }, 'User'), el('input', { id: 'audit-user', name: 'user', value: user }),
    el('label', { for: 'audit-since' }, 'Since (UTC day)'), el('input', { id: 'audit-since', name: 'since', type: 'date', value: since }),
    el('button', { type: 'submit' }, 'Filter'));
  f.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(f).entries()) if (v) p.set(k, v);
    go(`#/admin/audit/${encodeURIComponent(p.toString())}`);
  });
  page('Audit log', f,
    table('audit', [
      ['When', (a) => when(a.at)], ['User', (a) => a.user || '(none)'], ['Request', (a) => el('code', {}, `${a.method} ${a.path}`)],
      ['Status', (a) => String(a.status)], ['Outcome', (a) => a.outcome],
    ], rows, (a) => ({ 'data-audit': a.id })));
}

// What gc would remove (debris older than the grace period), and a button to remove it.
async function gc() {
  const report = await api('GET', '/v1/gc');
  page('Garbage collection',
    el('p', {}, report.clean ? 'Nothing to clean: libvirt and the database agree.' : `${report.items.length} leftovers found.`),
    table('gc', [
      ['Kind', (i) => i.kind], ['Name', (i) => i.name], ['Detail', (i) => i.detail], ['First seen', (i) => when(i.first_seen_at)],
    ], report.items),
    report.clean ? null : el('div', { class: 'actions' }, action('Clean now', async () => {
      const r = await api('POST', '/v1/gc');
      toast(`${r.items.filter((i) => i.removed).length} removed (the rest are within the grace period)`);
      go('#/admin/gc');
    }, { confirmText: 'Remove the leftovers past the grace period?', cls: 'danger', data: 'gc-clean' })));
}
