// The Warren dashboard: a single page over the RabbitMQ-compatible management API (/api/*)
// and Warren's own (/api/warren/*). No framework: hash routes, one render function per page,
// DOM built with `h` (text always set as text, never parsed as HTML), charts drawn on canvas.
'use strict';

const AUTH_KEY = 'warren-auth';
const REFRESH_MS = 5000;
const HISTORY = 60; // chart samples kept per series
const enc = encodeURIComponent;
const $ = (sel, root = document) => root.querySelector(sel);

// ----- DOM and formatting ------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const num = (n) => (n === undefined || n === null ? '–' : Number(n).toLocaleString('en'));
const rate = (d) => (d && typeof d.rate === 'number' ? d.rate.toFixed(1) + '/s' : '–');
const ms = (v) => (v === undefined || v === null ? '–' : v < 10 ? v.toFixed(2) + ' ms' : v.toFixed(0) + ' ms');
const stat = (o, k) => (o && o.message_stats ? rate(o.message_stats[k + '_details']) : '–');

function flash(text, error) {
  const box = h('div', { class: error ? 'error' : '' }, text);
  $('#flash').append(box);
  setTimeout(() => box.remove(), error ? 8000 : 3000);
}

// A button that acts on the second click, so destructive actions are not one slip away.
function dangerButton(label, action, attrs = {}) {
  let armed = null;
  const b = h('button', { class: 'danger', ...attrs }, label);
  b.addEventListener('click', async (ev) => {
    ev.stopPropagation();
    if (!armed) {
      b.classList.add('armed');
      b.textContent = 'Confirm ' + label.toLowerCase();
      armed = setTimeout(() => { armed = null; b.classList.remove('armed'); b.textContent = label; }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    b.classList.remove('armed');
    b.textContent = label;
    await run(action);
  });
  return b;
}

function table(columns, rows, opts = {}) {
  const head = h('tr', null, columns.map((c) => h('th', { class: c.n ? 'n' : '' }, c.title)));
  const body = rows.map((r) => h('tr', {
    class: opts.href ? 'link' : '',
    dataset: opts.key ? { name: opts.key(r) } : undefined,
    onclick: opts.href ? () => { location.hash = opts.href(r); } : undefined,
  }, columns.map((c) => h('td', { class: (c.n ? 'n ' : '') + (c.cls || '') }, c.get(r)))));
  if (!rows.length) body.push(h('tr', null, h('td', { colspan: columns.length, class: 'muted' }, opts.empty || 'None.')));
  return h('table', { id: opts.id }, h('thead', null, head), h('tbody', null, body));
}

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

function field(label, input) { return h('label', null, h('span', null, label), input); }

function form(id, fields, submitLabel, onSubmit) {
  const f = h('form', { class: 'box', id }, fields, h('div', null, h('button', { class: 'primary', type: 'submit' }, submitLabel)));
  f.addEventListener('submit', (ev) => { ev.preventDefault(); run(() => onSubmit(new FormData(f), f)); });
  return f;
}

function parseJson(text, what) {
  if (!text.trim()) return {};
  try { return JSON.parse(text); } catch (e) { throw new Error(what + ' is not valid JSON: ' + e.message); }
}

// ----- API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, reason) { super(reason); this.status = status; }
}

async function api(method, path, body, headers = {}) {
  const auth = sessionStorage.getItem(AUTH_KEY);
  const init = { method, headers: { ...headers } };
  if (auth) init.headers.Authorization = 'Basic ' + auth;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch('/api' + path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (r.status === 401) {
    sessionStorage.removeItem(AUTH_KEY);
    showLogin('Login failed: ' + ((data && data.reason) || 'not authorised'));
    throw new ApiError(401, 'not authorised');
  }
  if (!r.ok) throw new ApiError(r.status, (data && (data.reason || data.error)) || r.statusText);
  return data;
}

async function run(action) {
  try { await action(); } catch (e) { if (e.status !== 401) flash(e.message, true); }
}

const vq = (vhost, name) => enc(vhost) + '/' + enc(name);

// ----- charts -------------------------------------------------------------------------------

const COLORS = ['#2a6fdb', '#23875a', '#d98b1c', '#9b4dca', '#c73a3a'];
const history = {}; // chart id -> {t: [], series: {name: []}}

function record(id, values) {
  const hst = history[id] || (history[id] = { t: [], series: {} });
  hst.t.push(Date.now());
  for (const [k, v] of Object.entries(values)) (hst.series[k] || (hst.series[k] = [])).push(v || 0);
  if (hst.t.length > HISTORY) {
    hst.t.shift();
    for (const s of Object.values(hst.series)) s.shift();
  }
  return hst;
}

function chart(id, title, values, unit) {
  const hst = record(id, values);
  const names = Object.keys(values);
  const canvas = h('canvas', { id: 'chart-' + id });
  const legend = h('div', { class: 'legend' }, names.map((n, i) => h('span', null,
    h('i', { style: 'background:' + COLORS[i % COLORS.length] }), n + ': ' + (values[n] || 0).toFixed(unit === '/s' ? 1 : 0) + unit)));
  const box = h('div', { class: 'chart' }, h('h2', { style: 'margin:0 0 .3rem' }, title), canvas, legend);
  requestAnimationFrame(() => draw(canvas, hst, names));
  return box;
}

function draw(canvas, hst, names) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, ht = canvas.clientHeight;
  if (!w || !ht) return;
  canvas.width = w * dpr;
  canvas.height = ht * dpr;
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  const pad = { l: 48, r: 8, t: 8, b: 18 };
  const all = names.flatMap((n) => hst.series[n]);
  const max = Math.max(1, ...all) * 1.1;
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#6b7385';
  g.strokeStyle = '#e3e6ec';
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (ht - pad.t - pad.b) * (1 - i / 4);
    g.beginPath(); g.moveTo(pad.l, y); g.lineTo(w - pad.r, y); g.stroke();
    const label = max * i / 4;
    g.fillText(label >= 100 ? label.toFixed(0) : label.toFixed(1), 4, y + 4);
  }
  const n = hst.t.length;
  const span = Math.max(1, HISTORY - 1);
  const x = (i) => pad.l + (w - pad.l - pad.r) * ((HISTORY - n + i) / span);
  const y = (v) => pad.t + (ht - pad.t - pad.b) * (1 - v / max);
  names.forEach((name, k) => {
    const s = hst.series[name];
    g.strokeStyle = COLORS[k % COLORS.length];
    g.lineWidth = 2;
    g.beginPath();
    s.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
    g.stroke();
  });
  g.fillStyle = '#6b7385';
  g.fillText('last ' + Math.round((REFRESH_MS * HISTORY) / 60000) + ' min', w - 70, ht - 4);
}

// ----- pages --------------------------------------------------------------------------------

async function overview() {
  const o = await api('GET', '/overview');
  const t = o.object_totals || {}, q = o.queue_totals || {}, m = o.message_stats || {};
  const card = (label, v, id) => h('div', { class: 'card', id }, h('b', null, num(v)), h('span', null, label));
  const r = (k) => (m[k + '_details'] ? m[k + '_details'].rate : 0);
  return [
    h('h1', null, 'Overview'),
    h('p', { class: 'muted' }, [o.product_name || 'Broker', o.product_version || o.rabbitmq_version, o.node].filter(Boolean).join(' · ')),
    h('div', { class: 'cards' },
      card('Connections', t.connections, 'total-connections'), card('Channels', t.channels, 'total-channels'),
      card('Queues', t.queues, 'total-queues'), card('Exchanges', t.exchanges, 'total-exchanges'),
      card('Consumers', t.consumers, 'total-consumers'), card('Messages', q.messages, 'total-messages')),
    h('div', { class: 'charts' },
      chart('rates', 'Message rates', { publish: r('publish'), deliver: r('deliver_get'), ack: r('ack') }, '/s'),
      chart('queued', 'Queued messages', { ready: q.messages_ready, unacked: q.messages_unacknowledged }, ''),
      chart('objects', 'Connections, channels, queues', { connections: t.connections, channels: t.channels, queues: t.queues }, '')),
    (o.listeners && o.listeners.length) ? [h('h2', null, 'Listeners'), table([
      { title: 'Protocol', get: (l) => l.protocol }, { title: 'Address', get: (l) => l.ip_address },
      { title: 'Port', n: true, get: (l) => l.port }], o.listeners)] : null,
  ];
}

async function queues() {
  const list = await api('GET', '/queues');
  const vhosts = await api('GET', '/vhosts').catch(() => [{ name: '/' }]);
  return [
    h('h1', null, 'Queues'),
    table([
      { title: 'Vhost', get: (q) => q.vhost }, { title: 'Name', cls: 'name', get: (q) => q.name },
      { title: 'Type', get: (q) => q.type || 'classic' }, { title: 'State', get: (q) => q.state || '' },
      { title: 'Ready', n: true, cls: 'ready', get: (q) => num(q.messages_ready) },
      { title: 'Unacked', n: true, get: (q) => num(q.messages_unacknowledged) },
      { title: 'Total', n: true, cls: 'messages', get: (q) => num(q.messages) },
      { title: 'Consumers', n: true, cls: 'consumers', get: (q) => num(q.consumers) },
      { title: 'Incoming', n: true, get: (q) => stat(q, 'publish') },
      { title: 'Deliver / get', n: true, get: (q) => stat(q, 'deliver_get') },
      { title: 'Ack', n: true, get: (q) => stat(q, 'ack') },
    ], list, { id: 'queues', key: (q) => q.name, href: (q) => '#/queues/' + vq(q.vhost, q.name), empty: 'No queues.' }),
    h('h2', null, 'Add a queue'),
    form('add-queue', [
      field('Vhost', h('select', { name: 'vhost' }, vhosts.map((v) => h('option', null, v.name)))),
      field('Name', h('input', { name: 'name', required: true })),
      field('Durable', h('select', { name: 'durable' }, h('option', null, 'true'), h('option', null, 'false'))),
      field('Arguments (JSON)', h('textarea', { name: 'arguments', placeholder: '{"x-message-ttl": 60000}' })),
    ], 'Add queue', async (d) => {
      await api('PUT', '/queues/' + vq(d.get('vhost'), d.get('name')), {
        durable: d.get('durable') === 'true', auto_delete: false, arguments: parseJson(d.get('arguments'), 'Arguments'),
      });
      flash('Queue ' + d.get('name') + ' declared');
      render();
    }),
  ];
}

async function queue(vhost, name) {
  const path = '/queues/' + vq(vhost, name);
  const q = await api('GET', path);
  const bindings = await api('GET', path + '/bindings').catch(() => []);
  const out = h('div', { id: 'get-result' });
  return [
    h('h1', null, 'Queue ', h('span', { id: 'queue-name' }, name), h('span', { class: 'tag' }, vhost)),
    kv([
      ['Messages', h('span', { id: 'queue-messages' }, num(q.messages))],
      ['Ready', num(q.messages_ready)], ['Unacknowledged', num(q.messages_unacknowledged)],
      ['Consumers', h('span', { id: 'queue-consumers' }, num(q.consumers))],
      ['Incoming', stat(q, 'publish')], ['Deliver / get', stat(q, 'deliver_get')], ['Ack', stat(q, 'ack')],
      ['Features', [q.durable ? 'durable' : 'transient', q.auto_delete ? 'auto-delete' : '', q.exclusive ? 'exclusive' : ''].filter(Boolean).join(', ')],
      ['Arguments', JSON.stringify(q.arguments || {})],
    ]),
    h('div', { class: 'actions' },
      dangerButton('Purge', async () => { await api('DELETE', path + '/contents'); flash('Queue ' + name + ' purged'); render(); }, { id: 'purge' }),
      dangerButton('Delete', async () => { await api('DELETE', path); flash('Queue ' + name + ' deleted'); location.hash = '#/queues'; }, { id: 'delete' })),
    h('h2', null, 'Consumers'),
    table([{ title: 'Tag', get: (c) => c.consumer_tag }, { title: 'Channel', get: (c) => (c.channel_details || {}).name || '' },
      { title: 'Ack required', get: (c) => String(c.ack_required) }, { title: 'Prefetch', n: true, get: (c) => num(c.prefetch_count) }],
    q.consumer_details || [], { empty: 'No consumers.' }),
    h('h2', null, 'Bindings'),
    table([{ title: 'From', get: (b) => b.source || '(default exchange)' }, { title: 'Routing key', get: (b) => b.routing_key },
      { title: 'Arguments', get: (b) => JSON.stringify(b.arguments || {}) }], bindings),
    h('h2', null, 'Publish a message'),
    form('publish', [
      field('Payload', h('textarea', { name: 'payload' })),
      field('Headers (JSON)', h('textarea', { name: 'headers', placeholder: '{}' })),
      field('Properties (JSON)', h('textarea', { name: 'properties', placeholder: '{"delivery_mode": 2}' })),
    ], 'Publish', async (d) => {
      const props = parseJson(d.get('properties'), 'Properties');
      props.headers = parseJson(d.get('headers'), 'Headers');
      const r = await api('POST', '/exchanges/' + enc(vhost) + '/amq.default/publish', {
        routing_key: name, payload: d.get('payload'), payload_encoding: 'string', properties: props,
      });
      flash(r && r.routed === false ? 'Message published, but not routed' : 'Message published');
      render();
    }),
    h('h2', null, 'Get messages'),
    form('get', [
      field('Ack mode', h('select', { name: 'ackmode' }, ['ack_requeue_true', 'ack_requeue_false', 'reject_requeue_true', 'reject_requeue_false'].map((m) => h('option', null, m)))),
      field('Messages', h('input', { name: 'count', type: 'number', value: '1', min: '1' })),
    ], 'Get messages', async (d) => {
      const msgs = await api('POST', path + '/get', { count: Number(d.get('count')), ackmode: d.get('ackmode'), encoding: 'auto', truncate: 50000 });
      out.replaceChildren(...(msgs.length ? [] : [h('p', { class: 'muted' }, 'Queue is empty.')]),
        ...msgs.map((m, i) => h('div', { class: 'box message' },
          h('b', null, 'Message ' + (i + 1)),
          kv([['Routing key', m.routing_key], ['Exchange', m.exchange || '(default)'], ['Redelivered', String(m.redelivered)],
            ['Properties', JSON.stringify(m.properties || {})], ['Payload (' + m.payload_bytes + ' bytes, ' + m.payload_encoding + ')', h('pre', { class: 'payload' }, m.payload)]]))));
      if (d.get('ackmode').indexOf('requeue_false') >= 0) render();
    }),
    out,
  ];
}

async function exchanges() {
  const list = await api('GET', '/exchanges');
  return [
    h('h1', null, 'Exchanges'),
    table([
      { title: 'Vhost', get: (x) => x.vhost }, { title: 'Name', cls: 'name', get: (x) => x.name || '(AMQP default)' },
      { title: 'Type', get: (x) => x.type },
      { title: 'Features', get: (x) => [x.durable ? 'D' : '', x.auto_delete ? 'AD' : '', x.internal ? 'I' : ''].filter(Boolean).join(' ') },
      { title: 'In', n: true, get: (x) => stat(x, 'publish_in') }, { title: 'Out', n: true, get: (x) => stat(x, 'publish_out') },
    ], list, { id: 'exchanges', key: (x) => x.name, href: (x) => '#/exchanges/' + vq(x.vhost, x.name || 'amq.default') }),
  ];
}

async function exchange(vhost, name) {
  const path = '/exchanges/' + vq(vhost, name);
  const x = await api('GET', path);
  const [out, inb] = await Promise.all([api('GET', path + '/bindings/source'), api('GET', path + '/bindings/destination')]);
  const unbind = (b) => dangerButton('Unbind', async () => {
    const kind = b.destination_type === 'queue' ? 'q' : 'e';
    await api('DELETE', '/bindings/' + enc(vhost) + '/e/' + enc(b.source) + '/' + kind + '/' + enc(b.destination) + '/' + enc(b.properties_key));
    flash('Binding removed');
    render();
  });
  const cols = [{ title: 'Source', get: (b) => b.source }, { title: 'Destination', get: (b) => b.destination + ' (' + b.destination_type + ')' },
    { title: 'Routing key', get: (b) => b.routing_key }, { title: 'Arguments', get: (b) => JSON.stringify(b.arguments || {}) }, { title: '', get: unbind }];
  return [
    h('h1', null, 'Exchange ', name, h('span', { class: 'tag' }, vhost)),
    kv([['Type', x.type], ['Durable', String(x.durable)], ['Auto-delete', String(x.auto_delete)], ['Internal', String(x.internal)],
      ['Arguments', JSON.stringify(x.arguments || {})], ['In', stat(x, 'publish_in')], ['Out', stat(x, 'publish_out')]]),
    name.startsWith('amq.') ? null : h('div', { class: 'actions' },
      dangerButton('Delete', async () => { await api('DELETE', path); flash('Exchange deleted'); location.hash = '#/exchanges'; })),
    h('h2', null, 'Bindings from this exchange'), table(cols, out),
    h('h2', null, 'Bindings to this exchange'), table(cols, inb),
    h('h2', null, 'Add a binding from this exchange'),
    form('bind', [
      field('To', h('select', { name: 'kind' }, h('option', { value: 'q' }, 'queue'), h('option', { value: 'e' }, 'exchange'))),
      field('Destination', h('input', { name: 'dest', required: true })),
      field('Routing key', h('input', { name: 'key' })),
      field('Arguments (JSON)', h('textarea', { name: 'arguments' })),
    ], 'Bind', async (d) => {
      await api('POST', '/bindings/' + enc(vhost) + '/e/' + enc(name) + '/' + d.get('kind') + '/' + enc(d.get('dest')),
        { routing_key: d.get('key'), arguments: parseJson(d.get('arguments'), 'Arguments') });
      flash('Binding added');
      render();
    }),
    h('h2', null, 'Publish a message'),
    form('publish', [field('Routing key', h('input', { name: 'key' })), field('Payload', h('textarea', { name: 'payload' }))], 'Publish', async (d) => {
      const r = await api('POST', path + '/publish', { routing_key: d.get('key'), payload: d.get('payload'), payload_encoding: 'string', properties: {} });
      flash(r && r.routed === false ? 'Published, but not routed' : 'Message published');
    }),
  ];
}

const closeConnection = (name) => dangerButton('Close', async () => {
  await api('DELETE', '/connections/' + enc(name), undefined, { 'X-Reason': 'Closed from the Warren dashboard' });
  flash('Connection closed');
  render();
});

async function connections() {
  const list = await api('GET', '/connections');
  return [h('h1', null, 'Connections'), table([
    { title: 'Name', cls: 'name', get: (c) => c.name }, { title: 'User', get: (c) => c.user }, { title: 'Vhost', get: (c) => c.vhost },
    { title: 'Protocol', get: (c) => c.protocol }, { title: 'State', get: (c) => c.state },
    { title: 'Channels', n: true, get: (c) => num(c.channels) },
    { title: 'Received', n: true, get: (c) => rate(c.recv_oct_details) }, { title: 'Sent', n: true, get: (c) => rate(c.send_oct_details) },
    { title: '', get: (c) => closeConnection(c.name) },
  ], list, { id: 'connections', key: (c) => c.name, empty: 'No connections.' })];
}

async function channels() {
  const list = await api('GET', '/channels');
  return [h('h1', null, 'Channels'), table([
    { title: 'Channel', cls: 'name', get: (c) => c.name }, { title: 'User', get: (c) => c.user }, { title: 'Vhost', get: (c) => c.vhost },
    { title: 'Mode', get: (c) => [c.confirm ? 'confirm' : '', c.transactional ? 'tx' : ''].filter(Boolean).join(' ') },
    { title: 'Consumers', n: true, get: (c) => num(c.consumer_count) }, { title: 'Prefetch', n: true, get: (c) => num(c.prefetch_count) },
    { title: 'Unacked', n: true, get: (c) => num(c.messages_unacknowledged) },
    { title: 'Publish', n: true, get: (c) => stat(c, 'publish') }, { title: 'Deliver / get', n: true, get: (c) => stat(c, 'deliver_get') },
    { title: 'Connection', get: (c) => (c.connection_details ? closeConnection(c.connection_details.name) : '') },
  ], list, { id: 'channels', key: (c) => c.name, empty: 'No channels.' })];
}

async function users() {
  const [list, perms, vhosts] = await Promise.all([api('GET', '/users'), api('GET', '/permissions').catch(() => []), api('GET', '/vhosts')]);
  const tags = (u) => (Array.isArray(u.tags) ? u.tags.join(', ') : u.tags);
  return [
    h('h1', null, 'Users'),
    table([{ title: 'Name', cls: 'name', get: (u) => u.name }, { title: 'Tags', get: tags },
      { title: '', get: (u) => dangerButton('Delete', async () => { await api('DELETE', '/users/' + enc(u.name)); flash('User deleted'); render(); }) }],
    list, { id: 'users', key: (u) => u.name }),
    h('h2', null, 'Permissions'),
    table([{ title: 'User', get: (p) => p.user }, { title: 'Vhost', get: (p) => p.vhost }, { title: 'Configure', get: (p) => p.configure },
      { title: 'Write', get: (p) => p.write }, { title: 'Read', get: (p) => p.read }], perms),
    h('h2', null, 'Add a user'),
    form('add-user', [field('Name', h('input', { name: 'name', required: true })), field('Password', h('input', { name: 'password', type: 'password' })),
      field('Tags', h('input', { name: 'tags', placeholder: 'administrator, monitoring' }))], 'Add user', async (d) => {
      await api('PUT', '/users/' + enc(d.get('name')), { password: d.get('password'), tags: d.get('tags') });
      flash('User added');
      render();
    }),
    h('h2', null, 'Set permissions'),
    form('set-permission', [field('User', h('select', { name: 'user' }, list.map((u) => h('option', null, u.name)))),
      field('Vhost', h('select', { name: 'vhost' }, vhosts.map((v) => h('option', null, v.name)))),
      field('Configure', h('input', { name: 'configure', value: '.*' })), field('Write', h('input', { name: 'write', value: '.*' })),
      field('Read', h('input', { name: 'read', value: '.*' }))], 'Set permission', async (d) => {
      await api('PUT', '/permissions/' + enc(d.get('vhost')) + '/' + enc(d.get('user')), { configure: d.get('configure'), write: d.get('write'), read: d.get('read') });
      flash('Permission set');
      render();
    }),
  ];
}

async function vhosts() {
  const list = await api('GET', '/vhosts');
  return [
    h('h1', null, 'Virtual hosts'),
    table([{ title: 'Name', cls: 'name', get: (v) => v.name }, { title: 'Messages', n: true, get: (v) => num(v.messages) },
      { title: 'Ready', n: true, get: (v) => num(v.messages_ready) }, { title: 'Unacked', n: true, get: (v) => num(v.messages_unacknowledged) },
      { title: 'Publish', n: true, get: (v) => stat(v, 'publish') },
      { title: '', get: (v) => (v.name === '/' ? '' : dangerButton('Delete', async () => { await api('DELETE', '/vhosts/' + enc(v.name)); flash('Vhost deleted'); render(); })) }],
    list, { id: 'vhosts', key: (v) => v.name }),
    h('h2', null, 'Add a virtual host'),
    form('add-vhost', [field('Name', h('input', { name: 'name', required: true }))], 'Add vhost', async (d) => {
      await api('PUT', '/vhosts/' + enc(d.get('name')), {});
      flash('Vhost added');
      render();
    }),
  ];
}

// ----- RPC ----------------------------------------------------------------------------------

async function rpc() {
  const list = await api('GET', '/warren/services');
  return [
    h('h1', null, 'RPC services'),
    h('p', { class: 'muted' }, 'Queues whose messages carry the Warren protocol header, as the broker sees their traffic.'),
    table([
      { title: 'Vhost', get: (s) => s.vhost }, { title: 'Service', cls: 'name', get: (s) => s.name },
      { title: 'Servers', n: true, cls: 'servers', get: (s) => (s.consumers === null ? 'no queue' : num(s.consumers)) },
      { title: 'Requests', n: true, cls: 'requests', get: (s) => num(s.requests) },
      { title: 'Request rate', n: true, get: (s) => rate(s.requests_details) },
      { title: 'p50', n: true, get: (s) => ms(s.latency && s.latency.p50_ms) },
      { title: 'p99', n: true, get: (s) => ms(s.latency && s.latency.p99_ms) },
      { title: 'In flight', n: true, get: (s) => num(s.in_flight) },
      { title: 'Expired', n: true, get: (s) => num(s.expired) }, { title: 'Returned', n: true, get: (s) => num(s.returned) },
      { title: 'Unanswered', n: true, get: (s) => num(s.unanswered) },
    ], list, { id: 'services', key: (s) => s.name, href: (s) => '#/rpc/' + vq(s.vhost, s.name), empty: 'No RPC traffic seen yet.' }),
  ];
}

async function callService(vhost, name, method, args) {
  return api('POST', '/warren/services/' + vq(vhost, name) + '/call', { method, args });
}

async function service(vhost, name) {
  const list = await api('GET', '/warren/services');
  const s = list.find((x) => x.vhost === vhost && x.name === name) || { vhost, name };
  const l = s.latency || {};
  const methods = h('div', { id: 'methods' }, h('p', { class: 'muted' }, 'Asking the service to $describe itself…'));
  describe(vhost, name, methods);
  return [
    h('h1', null, 'Service ', h('span', { id: 'service-name' }, name), h('span', { class: 'tag' }, vhost)),
    h('div', { class: 'cards' },
      ...[['Servers', s.consumers], ['Waiting', s.messages], ['Requests', s.requests], ['Replies', s.replies], ['In flight', s.in_flight],
        ['Expired', s.expired], ['Returned', s.returned], ['Unanswered', s.unanswered]]
        .map(([k, v]) => h('div', { class: 'card' }, h('b', null, num(v)), h('span', null, k)))),
    h('div', { class: 'charts' },
      chart('svc-rate-' + vhost + '/' + name, 'Requests and replies', { requests: (s.requests_details || {}).rate, replies: (s.replies_details || {}).rate }, '/s'),
      chart('svc-lat-' + vhost + '/' + name, 'Reply latency (since start)', { p50: l.p50_ms, p99: l.p99_ms }, ' ms')),
    h('h2', null, 'Methods'),
    methods,
  ];
}

// $describe answers, kept while the page is shown, so refreshes do not ask again.
const described = new Map();
window.addEventListener('hashchange', () => described.clear());

async function describe(vhost, name, box) {
  const key = vhost + '/' + name;
  let d = described.get(key);
  try {
    if (!d) {
      const r = await callService(vhost, name, '$describe', {});
      if (!r.reply || !('ok' in r.reply)) throw new Error('$describe answered ' + JSON.stringify(r.reply));
      d = r.reply.ok;
      described.set(key, d);
    }
  } catch (e) {
    box.replaceChildren(h('p', { class: 'muted', id: 'describe-error' }, 'No method list: ' + e.message), methodForm(vhost, name, null));
    return;
  }
  box.replaceChildren(...(d.methods || []).map((m) => methodForm(vhost, name, m)));
}

// One method: its signature and doc, an input per parameter (JSON values), the reply.
function methodForm(vhost, name, m) {
  const params = m ? m.params || [] : [];
  const out = h('div', { class: 'reply' });
  const inputs = params.map((p) => h('input', { name: p.name, placeholder: p.type, dataset: { param: p.name } }));
  const raw = h('textarea', { name: '$args', placeholder: '{"a": 1}' });
  const methodInput = m ? null : h('input', { name: '$method', placeholder: 'method name' });
  const f = form('call-' + (m ? m.name : 'any'), [
    methodInput ? field('Method', methodInput) : null,
    params.map((p, i) => field(p.name + ': ' + p.type, inputs[i])),
    m && params.length ? null : field('Arguments (JSON)', raw),
  ], 'Call', async () => {
    let args = {};
    if (params.length) {
      params.forEach((p, i) => {
        const v = inputs[i].value.trim();
        if (v === '') return;
        try { args[p.name] = JSON.parse(v); } catch (_) { args[p.name] = v; } // a bare word is a string
      });
    } else {
      args = parseJson(raw.value, 'Arguments');
    }
    const method = m ? m.name : methodInput.value.trim();
    const r = await callService(vhost, name, method, args);
    out.replaceChildren(h('p', { class: 'muted' }, 'Reply in ' + r.elapsed_ms.toFixed(1) + ' ms (call id ' + r.call_id + ')'),
      h('pre', { class: 'reply-json' }, JSON.stringify(r.reply, null, 2)));
  });
  if (!m) return h('div', { class: 'box' }, f, out);
  const sig = m.name + '(' + params.map((p) => p.name + ': ' + p.type).join(', ') + ') → ' + m.returns + (m.error ? ' | ' + m.error : '');
  return h('details', { class: 'method', dataset: { method: m.name } },
    h('summary', null, sig, m.idempotent ? h('span', { class: 'tag' }, 'idempotent') : null, m.oneway ? h('span', { class: 'tag' }, 'one-way') : null),
    h('div', { class: 'body' }, m.doc ? h('p', null, m.doc) : null, f, out));
}

// ----- routing, login -----------------------------------------------------------------------

const ROUTES = [
  [/^#?\/?$/, 'overview', overview],
  [/^#\/queues$/, 'queues', queues],
  [/^#\/queues\/([^/]+)\/([^/]+)$/, 'queues', queue],
  [/^#\/exchanges$/, 'exchanges', exchanges],
  [/^#\/exchanges\/([^/]+)\/([^/]+)$/, 'exchanges', exchange],
  [/^#\/connections$/, 'connections', connections],
  [/^#\/channels$/, 'channels', channels],
  [/^#\/users$/, 'users', users],
  [/^#\/vhosts$/, 'vhosts', vhosts],
  [/^#\/rpc$/, 'rpc', rpc],
  [/^#\/rpc\/([^/]+)\/([^/]+)$/, 'rpc', service],
];

let rendering = 0;

// Whether the user is working in the page (typing in a form, a method open): periodic
// refreshes then leave it alone.
function busy() {
  const active = document.activeElement;
  const typing = active && active.closest && active.closest('form') && active.closest('#main');
  return !!typing || !!document.querySelector('details.method[open]');
}

async function render(refreshing) {
  if (!sessionStorage.getItem(AUTH_KEY)) return showLogin();
  const hash = location.hash || '#/';
  const route = ROUTES.find(([re]) => re.test(hash)) || ROUTES[0];
  const args = (hash.match(route[0]) || []).slice(1).map(decodeURIComponent);
  document.querySelectorAll('#nav a').forEach((a) => a.classList.toggle('active', a.dataset.page === route[1]));
  const mine = ++rendering;
  try {
    const content = await route[2](...args);
    if (mine !== rendering || (refreshing === true && busy())) return; // a later render won, or the user is busy
    const main = $('#main');
    main.replaceChildren(...[content].flat(Infinity).filter(Boolean));
    main.dataset.page = route[1];
    main.dataset.rendered = String(mine);
  } catch (e) {
    if (e.status !== 401 && mine === rendering) $('#main').replaceChildren(h('p', { class: 'error', id: 'page-error' }, 'Error: ' + e.message));
  }
}

function showLogin(message) {
  $('#who').replaceChildren();
  const f = form('login', [
    message ? h('p', { class: 'error' }, message) : null,
    field('Username', h('input', { name: 'username', autocomplete: 'username', required: true })),
    field('Password', h('input', { name: 'password', type: 'password', autocomplete: 'current-password' })),
  ], 'Log in', async (d) => {
    sessionStorage.setItem(AUTH_KEY, btoa(unescape(enc(d.get('username') + ':' + d.get('password')))));
    const me = await api('GET', '/whoami');
    showUser(me);
    render();
  });
  $('#main').replaceChildren(h('div', { class: 'login' }, h('h1', null, 'Log in to Warren'), f));
  $('#main').dataset.page = 'login';
}

function showUser(me) {
  $('#who').replaceChildren(h('span', { id: 'who-name' }, me.name), h('button', {
    id: 'logout',
    onclick: () => { sessionStorage.removeItem(AUTH_KEY); showLogin(); },
  }, 'Log out'));
}

function refresh() {
  if (!document.hidden && !busy() && sessionStorage.getItem(AUTH_KEY)) render(true);
}

window.addEventListener('hashchange', render);
window.addEventListener('DOMContentLoaded', async () => {
  if (sessionStorage.getItem(AUTH_KEY)) {
    try { showUser(await api('GET', '/whoami')); } catch (_) { return; }
  }
  render();
  setInterval(refresh, REFRESH_MS);
});
