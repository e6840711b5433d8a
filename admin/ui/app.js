// caddy-rpm admin page. Plain JavaScript, no dependencies, no build step.
// Everything is rendered with textContent; nothing from the API becomes HTML.
'use strict';

(function () {
  const TOKEN_KEY = 'caddy-rpm-admin-token';
  const REFRESH_MS = 3000;
  // The page lives at <base>/ui; the JSON routes are beside it under <base>/.
  const API = location.pathname.replace(/\/ui\/?$/, '/');

  const $ = (id) => document.getElementById(id);
  const el = {
    message: $('message'),
    tokenBox: $('token-box'), tokenForm: $('token-form'), token: $('token'),
    userForm: $('user-form'), userId: $('user-id'), lookup: $('lookup'),
    userStatus: $('user-status'), used: $('user-used'), reserved: $('user-reserved'), limit: $('user-limit'),
    inFlight: $('user-inflight'), concurrencyShown: $('user-concurrency'),
    concurrencyForm: $('concurrency-form'), concurrency: $('concurrency'), saveConcurrency: $('save-concurrency'),
    countdown: $('countdown'), refreshNote: $('refresh-note'),
    perGroup: $('per-group'), perZone: $('per-zone'),
    groupForm: $('group-form'), groupId: $('group-id'), groupEditor: $('group-editor'),
    groupLabel: $('group-label'), overrides: $('overrides'), empty: $('overrides-empty'),
    addRow: $('add-row'), save: $('save'), clearAll: $('clear-all'),
  };

  // ---- messages -----------------------------------------------------------

  function show(text, kind) {
    el.message.textContent = text;
    el.message.className = 'message ' + (kind || 'info');
    el.message.dataset.from = '';
    el.message.hidden = false;
  }

  function clearMessage() {
    el.message.textContent = '';
    el.message.hidden = true;
  }

  // ---- API ------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, serverText) {
      super(serverText);
      this.status = status;
      this.serverText = serverText;
    }
  }

  function describe(err) {
    if (!(err instanceof ApiError)) return 'Unexpected error: ' + err.message;
    const s = err.serverText;
    switch (err.status) {
      case 0: return 'Cannot reach the admin API: ' + s + '. Is Caddy running?';
      case 400: return 'Invalid input: ' + s;
      case 401: return 'Admin token required or wrong. Enter the admin token above.';
      case 404: return 'Not found' + (s ? ': ' + s : '');
      case 409:
        // The keys_file store answers 409 to every write.
        if (/read-only/i.test(s)) return 'Cannot change data: ' + s + '. Edit the keys file and reload Caddy instead.';
        return 'Conflict: ' + s + '. The keys_file store is read-only: edit the keys file and reload Caddy, or configure Postgres to change data here.';
      default: return 'The admin API answered ' + err.status + (s ? ': ' + s : '');
    }
  }

  // pendingRetry is the action to repeat once the operator has given a token.
  let pendingRetry = null;

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = 'Bearer ' + token;
    const init = { method, headers, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, e && e.message ? e.message : 'network error');
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) {
      const reason = (data && typeof data.error === 'string' && data.error) || text.trim() || res.statusText;
      throw new ApiError(res.status, reason);
    }
    return data;
  }

  // fail shows err to the operator; on 401 it asks for the token and
  // remembers retry so that saving the token repeats the action.
  function fail(err, retry) {
    show(describe(err), 'error');
    if (err instanceof ApiError && err.status === 401) {
      pendingRetry = retry || null;
      el.tokenBox.hidden = false;
      el.token.value = '';
      el.token.focus();
    }
  }

  el.tokenForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = el.token.value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    el.token.value = '';
    el.tokenBox.hidden = true;
    clearMessage();
    const retry = pendingRetry;
    pendingRetry = null;
    if (retry) retry();
  });

  // ---- helpers --------------------------------------------------------------

  function parseId(value) {
    const s = String(value).trim();
    if (!/^[0-9]+$/.test(s)) return null;
    const n = Number(s);
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  }

  function fmtLimit(n) {
    return n === 0 || n === null || n === undefined ? 'unlimited' : String(n);
  }

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  // setBusy puts a button in (or out of) its loading state. It is synchronous,
  // so a second click on the same button meets a disabled control.
  function setBusy(btn, busy, label) {
    if (busy) {
      btn.dataset.label = btn.textContent;
      btn.disabled = true;
      btn.textContent = label;
      btn.classList.add('loading');
      btn.setAttribute('aria-busy', 'true');
    } else {
      btn.disabled = false;
      btn.textContent = btn.dataset.label || btn.textContent;
      btn.classList.remove('loading');
      btn.removeAttribute('aria-busy');
    }
  }

  // ---- user status ----------------------------------------------------------

  let shownUser = null;   // user id being shown and refreshed
  let refreshTimer = 0;
  let countdownTimer = 0;
  let resetsAt = 0;       // ms timestamp when the window resets (local clock)

  function stopRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = 0;
  }

  function tick() {
    const left = Math.max(0, Math.ceil((resetsAt - Date.now()) / 1000));
    el.countdown.textContent = left + ' s';
  }

  function renderStatus(st) {
    el.used.textContent = String(st.user_rpm_used);
    el.reserved.textContent = String(st.user_rpm_reserved || 0);
    el.limit.textContent = fmtLimit(st.user_rpm_limit);
    el.inFlight.textContent = String(st.in_flight || 0);
    el.concurrencyShown.textContent = fmtLimit(st.concurrency);
    // The input follows the data when another user is shown or after a
    // save, not on every refresh: it may hold what the operator is typing.
    if (el.concurrency.dataset.user !== String(st.user_id)) {
      el.concurrency.dataset.user = String(st.user_id);
      el.concurrency.value = String(st.concurrency || 0);
    }

    const gbody = el.perGroup.tBodies[0];
    gbody.replaceChildren();
    for (const g of st.per_group || []) {
      const tr = document.createElement('tr');
      tr.dataset.groupId = String(g.group_id);
      cell(tr, String(g.group_id), 'num');
      cell(tr, g.group_name || '');
      cell(tr, String(g.used), 'num used');
      cell(tr, fmtLimit(g.limit), 'num limit');
      cell(tr, g.source || '', 'source');
      gbody.appendChild(tr);
    }
    if (!gbody.rows.length) {
      const tr = document.createElement('tr');
      cell(tr, 'No groups for this user.', 'hint').colSpan = 5;
      gbody.appendChild(tr);
    }

    const zones = st.per_zone;
    const zbody = el.perZone.tBodies[0];
    zbody.replaceChildren();
    if (Array.isArray(zones) && zones.length) {
      for (const z of zones) {
        const tr = document.createElement('tr');
        const name = z.zone || z.name || '';
        tr.dataset.zone = name;
        cell(tr, name);
        cell(tr, z.scope || '');
        // Zones limited per key count each key apart: no single number for the user.
        cell(tr, z.used === undefined || z.used === null ? 'per key' : String(z.used), 'num used');
        cell(tr, fmtLimit(z.limit), 'num limit');
        let inFlight = '';
        if (z.concurrency) inFlight = z.in_flight === undefined || z.in_flight === null ? 'per key' : String(z.in_flight);
        cell(tr, inFlight, 'num inflight');
        cell(tr, fmtLimit(z.concurrency), 'num concurrency');
        zbody.appendChild(tr);
      }
      el.perZone.hidden = false;
    } else {
      el.perZone.hidden = true;
    }

    const secs = Number(st.window_resets_in);
    resetsAt = Date.now() + (Number.isFinite(secs) ? secs : 0) * 1000;
    tick();
    if (!countdownTimer) countdownTimer = setInterval(tick, 1000);

    el.refreshNote.textContent = 'Refreshes every 3 s. Last update ' + new Date().toLocaleTimeString() + '.';
    el.userStatus.hidden = false;
  }

  async function loadUser(id, fromTimer) {
    let st;
    try {
      st = await api('GET', 'users/' + id + '/rpm-status');
    } catch (err) {
      if (shownUser !== id) return;
      // Keep polling through network blips; stop on an answer that will not change by itself.
      if (err instanceof ApiError && err.status !== 0) {
        stopRefresh();
        shownUser = null;
        fail(err, () => lookup(id));
        return;
      }
      show(describe(err), 'error');
      el.message.dataset.from = 'refresh';
      scheduleRefresh(id);
      return;
    }
    if (shownUser !== id) return; // the operator moved on to another user
    renderStatus(st);
    if (fromTimer && el.message.dataset.from === 'refresh') {
      clearMessage();
    }
    scheduleRefresh(id);
  }

  function scheduleRefresh(id) {
    stopRefresh();
    refreshTimer = setTimeout(() => { if (shownUser === id) loadUser(id, true); }, REFRESH_MS);
  }

  async function lookup(id) {
    stopRefresh();
    shownUser = id;
    setBusy(el.lookup, true, 'Looking up…');
    try {
      await loadUser(id, false);
    } finally {
      setBusy(el.lookup, false);
    }
  }

  el.userForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = parseId(el.userId.value);
    if (id === null) {
      show('Invalid input: the user id must be a positive whole number.', 'error');
      return;
    }
    clearMessage();
    lookup(id);
  });

  // saveConcurrency sets the shown user's concurrency (0 lifts the cap).
  async function saveConcurrency(id, value) {
    setBusy(el.saveConcurrency, true, 'Saving…');
    try {
      await api('PATCH', 'users/' + id, { concurrency: value });
      show('Saved: user ' + id + ' may have ' + (value === 0 ? 'any number of' : value) + ' requests in flight.', 'success');
      el.concurrency.dataset.user = '';
      if (shownUser === id) await loadUser(id, false);
    } catch (err) {
      fail(err, () => saveConcurrency(id, value));
    } finally {
      setBusy(el.saveConcurrency, false);
    }
  }

  el.concurrencyForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (shownUser === null) return;
    const s = String(el.concurrency.value).trim();
    // The server checks the range; the page only makes sure a number goes.
    if (!/^-?[0-9]+$/.test(s)) {
      show('Invalid input: the concurrency must be a whole number (0 = no cap).', 'error');
      return;
    }
    clearMessage();
    saveConcurrency(shownUser, Number(s));
  });

  // ---- group overrides ------------------------------------------------------

  let openGroup = null;

  function addRow(userId, value) {
    const tr = document.createElement('tr');
    tr.dataset.userId = userId === undefined ? '' : String(userId);

    const uid = document.createElement('input');
    uid.type = 'number'; uid.min = '1'; uid.step = '1'; uid.inputMode = 'numeric';
    uid.className = 'user-id-value';
    uid.setAttribute('aria-label', 'User id');
    uid.value = tr.dataset.userId;
    uid.addEventListener('input', () => { tr.dataset.userId = uid.value.trim(); });

    const val = document.createElement('input');
    val.type = 'number'; val.min = '0'; val.step = '1'; val.inputMode = 'numeric';
    val.className = 'override-value';
    val.setAttribute('aria-label', 'RPM override');
    val.value = value === undefined || value === null ? '' : String(value);

    const rm = document.createElement('button');
    rm.type = 'button';
    rm.className = 'remove-row secondary';
    rm.textContent = 'Remove';
    rm.addEventListener('click', () => { tr.remove(); updateEmpty(); });

    for (const c of [uid, val, rm]) {
      const td = document.createElement('td');
      td.appendChild(c);
      tr.appendChild(td);
    }
    el.overrides.appendChild(tr);
    updateEmpty();
    return tr;
  }

  function updateEmpty() {
    el.empty.hidden = el.overrides.rows.length > 0;
  }

  function renderOverrides(data) {
    el.overrides.replaceChildren();
    const entries = (data && data.entries) || [];
    for (const e of entries) addRow(e.user_id, e.rpm_override);
    updateEmpty();
  }

  async function loadGroup(id) {
    const data = await api('GET', 'groups/' + id + '/rpm-overrides');
    openGroup = id;
    el.groupLabel.textContent = String(id);
    renderOverrides(data);
    el.groupEditor.hidden = false;
    return data;
  }

  async function open(id) {
    setBusy(el.groupForm.querySelector('button'), true, 'Opening…');
    try {
      await loadGroup(id);
    } catch (err) {
      fail(err, () => open(id));
    } finally {
      setBusy(el.groupForm.querySelector('button'), false);
    }
  }

  el.groupForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = parseId(el.groupId.value);
    if (id === null) {
      show('Invalid input: the group id must be a positive whole number.', 'error');
      return;
    }
    clearMessage();
    open(id);
  });

  el.addRow.addEventListener('click', () => {
    const tr = addRow();
    tr.querySelector('input').focus();
  });

  // collect reads the table into the PUT body, or returns an error text.
  function collect() {
    const entries = [];
    const seen = new Set();
    for (const tr of el.overrides.rows) {
      const uidText = tr.querySelector('.user-id-value').value;
      const valText = tr.querySelector('.override-value').value.trim();
      const uid = parseId(uidText);
      if (uid === null) return 'every row needs a user id (a positive whole number).';
      if (seen.has(uid)) return 'user ' + uid + ' appears twice.';
      seen.add(uid);
      if (!/^-?[0-9]+$/.test(valText)) return 'the override of user ' + uid + ' must be a whole number (0 exempts the user).';
      entries.push({ user_id: uid, rpm_override: Number(valText) });
    }
    return { entries };
  }

  // groupBusy disables the group's other controls while a write is in flight,
  // so that a Save cannot race a Clear all.
  function groupBusy(busy, except) {
    for (const b of [el.addRow, el.save, el.clearAll]) {
      if (b !== except) b.disabled = busy;
    }
  }

  async function save() {
    if (openGroup === null || el.save.disabled) return;
    const body = collect();
    if (typeof body === 'string') {
      show('Invalid input: ' + body, 'error');
      return;
    }
    const id = openGroup;
    clearMessage();
    setBusy(el.save, true, 'Saving…');
    groupBusy(true, el.save);
    try {
      await api('PUT', 'groups/' + id + '/rpm-overrides', body);
      await loadGroup(id);
      show('Saved ' + body.entries.length + ' override' + (body.entries.length === 1 ? '' : 's') + ' for group ' + id + '.', 'success');
    } catch (err) {
      fail(err, save);
    } finally {
      groupBusy(false, el.save);
      setBusy(el.save, false);
    }
  }

  async function clearAll() {
    // Disable first, synchronously, before any await: a double click reaches
    // a disabled button and sends one request.
    if (openGroup === null || el.clearAll.disabled) return;
    setBusy(el.clearAll, true, 'Clearing…');
    groupBusy(true, el.clearAll);
    el.overrides.setAttribute('aria-busy', 'true');
    const id = openGroup;
    clearMessage();
    try {
      const res = await api('DELETE', 'groups/' + id + '/rpm-overrides');
      const n = res && typeof res.cleared === 'number' ? res.cleared : 0;
      renderOverrides({ entries: [] });
      try {
        await loadGroup(id);
      } catch (_) {
        // The clear worked; the list shown stays empty.
      }
      show('Cleared ' + n + ' override' + (n === 1 ? '' : 's') + ' in group ' + id + '.', 'success');
    } catch (err) {
      fail(err, clearAll);
    } finally {
      el.overrides.removeAttribute('aria-busy');
      groupBusy(false, el.clearAll);
      setBusy(el.clearAll, false);
    }
  }

  el.save.addEventListener('click', save);
  el.clearAll.addEventListener('click', clearAll);
})();
