/*
 * lab.js — the Lab: a chat and a server page on top of the server's public
 * API only (GET /info, GET /metrics, POST /v1/chat/completions with SSE), the
 * same endpoints any client uses. No framework, no build step.
 *
 * Chat: the conversation lives in localStorage (key optiq-lab.v1) and is
 * re-sent whole with each turn (the server keeps no state between requests).
 * A reply streams as OpenAI chat chunks: reasoning_content deltas go to a
 * collapsed "Reasoning" block, content deltas to the answer, rendered as
 * Markdown by markdown.js (text nodes only: model output is never HTML).
 * Stop aborts the fetch; the server sees the connection close and ends the
 * generation at its next token. Images are read as data: URLs after a type
 * and size check, and sent as image_url parts.
 */
(function () {
  'use strict';

  var STORE = 'optiq-lab.v1';
  var MAX_IMAGE_BYTES = 8 * 1024 * 1024;    // per image, before base64
  var MAX_BODY_BYTES = 30 * 1024 * 1024;    // the server takes 32 MiB bodies
  var IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/bmp'];

  var $ = function (id) { return document.getElementById(id); };
  var info = null;           // GET /info
  var pending = [];          // attachments: {name, type, size, url}
  var busy = null;           // the reply in flight: {ctrl, ...}
  var state = load();

  /* ---- storage ---- */

  function emptyConversation() {
    return {version: 1, created: new Date().toISOString(), model: null, messages: []};
  }

  function load() {
    var s = null;
    try { s = JSON.parse(localStorage.getItem(STORE) || 'null'); } catch (e) { s = null; }
    if (!s || typeof s !== 'object') s = {};
    if (!s.conversation || !Array.isArray(s.conversation.messages)) s.conversation = emptyConversation();
    s.settings = Object.assign({system: '', temperature: 0.7, top_p: 0.95, max_tokens: 512, thinking: true, api_key: ''},
                               s.settings || {});
    return s;
  }

  // Saves; when images overflow the quota, saves without their pixels.
  function save() {
    try {
      localStorage.setItem(STORE, JSON.stringify(state));
      return;
    } catch (e) { /* quota */ }
    var slim = JSON.parse(JSON.stringify(state));
    slim.conversation.messages.forEach(function (m) {
      if (m.images) m.images = m.images.map(function (im) { return {name: im.name, type: im.type, size: im.size, url: null}; });
    });
    try {
      localStorage.setItem(STORE, JSON.stringify(slim));
      setStatus('Saved without the images: the browser storage is full.', true);
    } catch (e2) {
      setStatus('Could not save the conversation in the browser: ' + e2.message, true);
    }
  }

  /* ---- small helpers ---- */

  function h(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function setStatus(text, error) {
    var s = $('status');
    s.textContent = text || '';
    s.classList.toggle('error', !!error);
  }

  function headers(json) {
    var hd = {};
    if (json) hd['Content-Type'] = 'application/json';
    if (state.settings.api_key) hd.Authorization = 'Bearer ' + state.settings.api_key;
    return hd;
  }

  function fmtBytes(n) {
    if (n >= 1 << 30) return (n / (1 << 30)).toFixed(2) + ' GiB';
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MiB';
    if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KiB';
    return n + ' B';
  }

  function fmtCount(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(2) + 'B';
    if (n >= 1e6) return (n / 1e6).toFixed(2) + 'M';
    if (n >= 1e3) return (n / 1e3).toFixed(1) + 'K';
    return String(n);
  }

  async function errorMessage(resp) {
    var text = await resp.text();
    try {
      var j = JSON.parse(text);
      if (j.error && j.error.message) return j.error.message;
    } catch (e) { /* not JSON */ }
    return 'HTTP ' + resp.status + (text ? ': ' + text.slice(0, 200) : '');
  }

  /* ---- tabs ---- */

  var tabs = [$('tab-chat'), $('tab-server')];
  function selectTab(tab, focus) {
    tabs.forEach(function (t) {
      var on = t === tab;
      t.setAttribute('aria-selected', on ? 'true' : 'false');
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute('aria-controls')).hidden = !on;
    });
    if (focus) tab.focus();
    if (tab.id === 'tab-server') refreshServer();
  }
  tabs.forEach(function (t, k) {
    t.addEventListener('click', function () { selectTab(t, false); });
    t.addEventListener('keydown', function (e) {
      var n = tabs.length, j = -1;
      if (e.key === 'ArrowRight') j = (k + 1) % n;
      else if (e.key === 'ArrowLeft') j = (k + n - 1) % n;
      else if (e.key === 'Home') j = 0;
      else if (e.key === 'End') j = n - 1;
      if (j >= 0) { e.preventDefault(); selectTab(tabs[j], true); }
    });
  });

  /* ---- settings ---- */

  var fields = {
    system: $('system'), temperature: $('temperature'), top_p: $('top-p'), max_tokens: $('max-tokens'),
    thinking: $('thinking'), api_key: $('api-key')
  };
  function showSettings() {
    var s = state.settings;
    fields.system.value = s.system;
    fields.temperature.value = s.temperature;
    fields.top_p.value = s.top_p;
    fields.max_tokens.value = s.max_tokens;
    fields.thinking.checked = !!s.thinking;
    fields.api_key.value = s.api_key;
  }
  Object.keys(fields).forEach(function (k) {
    fields[k].addEventListener('change', function () {
      var f = fields[k];
      if (f.type === 'checkbox') state.settings[k] = f.checked;
      else if (f.type === 'number') {
        var v = Number(f.value), min = Number(f.min), max = Number(f.max);
        if (!isFinite(v) || f.value === '') v = state.settings[k];
        v = Math.min(max, Math.max(min, v));
        if (k === 'max_tokens') v = Math.round(v);
        f.value = v;
        state.settings[k] = v;
      } else state.settings[k] = f.value;
      save();
      if (k === 'api_key') loadInfo();
    });
  });
  // narrow windows start with the settings folded, to leave room for the conversation
  if (window.matchMedia) {
    var narrow = window.matchMedia('(max-width: 760px)');
    if (narrow.matches) $('settings').open = false;
    narrow.addEventListener('change', function (e) { if (e.matches) $('settings').open = false; });
  }

  /* ---- conversation view ---- */

  function imageList(images) {
    var box = h('div', 'images');
    images.forEach(function (im) {
      if (im.url) {
        var img = h('img');
        img.src = im.url;            // a data: URL read from a local file
        img.alt = im.name || 'image';
        box.appendChild(img);
      } else {
        box.appendChild(h('span', 'note', '[' + (im.name || 'image') + ': not kept]'));
      }
    });
    return box;
  }

  function statsText(st) {
    if (!st) return '';
    var parts = [];
    if (st.tokens != null) parts.push(st.tokens + ' tokens');
    if (st.tps != null) parts.push(st.tps.toFixed(1) + ' tok/s');
    if (st.ttft_ms != null) parts.push('first token ' + Math.round(st.ttft_ms) + ' ms');
    if (st.finish) parts.push(st.finish === 'stopped' ? 'stopped' : 'finish: ' + st.finish);
    return parts.join(' · ');
  }

  // An assistant message's node; fill() re-renders it from m.
  function assistantNode(m) {
    var box = h('article', 'msg assistant');
    box.setAttribute('aria-label', 'Assistant');
    box.appendChild(h('div', 'who', 'assistant'));
    var det = h('details', 'reasoning');
    var sum = h('summary', null, 'Reasoning');
    var rtext = h('div', 'text');
    det.appendChild(sum);
    det.appendChild(rtext);
    var answer = h('div', 'answer');
    var err = h('p', 'error');
    var stats = h('div', 'stats');
    box.appendChild(det);
    box.appendChild(answer);
    box.appendChild(err);
    box.appendChild(stats);
    box.fill = function (streaming) {
      det.hidden = !m.reasoning;
      rtext.textContent = m.reasoning || '';
      sum.textContent = streaming && m.reasoning && !m.content ? 'Reasoning…' : 'Reasoning';
      answer.replaceChildren(OptiqMarkdown.render(m.content || ''));
      answer.classList.toggle('cursor', !!streaming);
      box.setAttribute('aria-busy', streaming ? 'true' : 'false'); // announce the reply once, when complete
      err.hidden = !m.error;
      err.textContent = m.error || '';
      stats.textContent = statsText(m.stats);
    };
    box.fill(false);
    return box;
  }

  function userNode(m) {
    var box = h('article', 'msg user');
    box.setAttribute('aria-label', 'You');
    box.appendChild(h('div', 'who', 'you'));
    if (m.images && m.images.length) box.appendChild(imageList(m.images));
    box.appendChild(document.createTextNode(m.content || ''));
    return box;
  }

  function renderAll() {
    var list = $('messages');
    list.replaceChildren();
    var msgs = state.conversation.messages;
    if (!msgs.length) list.appendChild(h('p', 'empty',
      'No messages yet. Type below, attach images with the button, by dropping them here or by pasting.'));
    msgs.forEach(function (m) { list.appendChild(m.role === 'user' ? userNode(m) : assistantNode(m)); });
    list.scrollTop = list.scrollHeight;
  }

  /* ---- attachments ---- */

  function visionOk() { return !info || info.model.vision; }

  function showPending() {
    var ul = $('attachments');
    ul.replaceChildren();
    pending.forEach(function (a, k) {
      var li = h('li');
      var img = h('img');
      img.src = a.url;
      img.alt = a.name;
      img.title = a.name + ' (' + fmtBytes(a.size) + ')';
      var rm = h('button', null, '×');
      rm.type = 'button';
      rm.setAttribute('aria-label', 'Remove ' + a.name);
      rm.addEventListener('click', function () { pending.splice(k, 1); showPending(); $('prompt').focus(); });
      li.appendChild(img);
      li.appendChild(rm);
      ul.appendChild(li);
    });
  }

  function readAsDataURL(file) {
    return new Promise(function (resolve, reject) {
      var r = new FileReader();
      r.onload = function () { resolve(r.result); };
      r.onerror = function () { reject(r.error || new Error('cannot read the file')); };
      r.readAsDataURL(file);
    });
  }

  async function addFiles(files) {
    files = Array.prototype.slice.call(files || []);
    if (!files.length) return;
    if (!visionOk()) {
      setStatus('This model has no vision sidecar (optiq_vision.safetensors): it cannot take images.', true);
      return;
    }
    var problems = [];
    for (var i = 0; i < files.length; i++) {
      var f = files[i];
      var name = f.name || 'pasted image';
      if (IMAGE_TYPES.indexOf(f.type) < 0) { problems.push(name + ': not a PNG, JPEG, GIF, WebP or BMP image'); continue; }
      if (f.size > MAX_IMAGE_BYTES) {
        problems.push(name + ': ' + fmtBytes(f.size) + ' is over the ' + fmtBytes(MAX_IMAGE_BYTES) + ' limit');
        continue;
      }
      if (!f.size) { problems.push(name + ': empty file'); continue; }
      try {
        pending.push({name: name, type: f.type, size: f.size, url: await readAsDataURL(f)});
      } catch (e) {
        problems.push(name + ': ' + e.message);
      }
    }
    showPending();
    if (problems.length) setStatus('Not attached: ' + problems.join('; '), true);
    else setStatus(pending.length + (pending.length === 1 ? ' image' : ' images') + ' attached');
  }

  $('attach').addEventListener('click', function () { $('file-input').click(); });
  $('file-input').addEventListener('change', function (e) {
    addFiles(e.target.files);
    e.target.value = '';
  });

  var chatPanel = $('panel-chat'), overlay = $('drop-overlay'), dragDepth = 0;
  function hasFiles(e) {
    var t = e.dataTransfer && e.dataTransfer.types;
    return !!t && Array.prototype.indexOf.call(t, 'Files') >= 0;
  }
  chatPanel.addEventListener('dragenter', function (e) {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth++;
    overlay.hidden = false;
  });
  chatPanel.addEventListener('dragover', function (e) {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });
  chatPanel.addEventListener('dragleave', function () {
    if (--dragDepth <= 0) { dragDepth = 0; overlay.hidden = true; }
  });
  chatPanel.addEventListener('drop', function (e) {
    e.preventDefault();
    dragDepth = 0;
    overlay.hidden = true;
    if (e.dataTransfer) addFiles(e.dataTransfer.files);
  });
  $('prompt').addEventListener('paste', function (e) {
    var items = (e.clipboardData && e.clipboardData.items) || [];
    var files = [];
    for (var i = 0; i < items.length; i++)
      if (items[i].kind === 'file') { var f = items[i].getAsFile(); if (f) files.push(f); }
    if (files.length) { e.preventDefault(); addFiles(files); }
  });

  /* ---- sending ---- */

  function apiMessages() {
    var out = [];
    var sys = state.settings.system.trim();
    if (sys) out.push({role: 'system', content: sys});
    state.conversation.messages.forEach(function (m) {
      if (m.role === 'user') {
        var imgs = (m.images || []).filter(function (im) { return im.url; });
        if (!imgs.length) { out.push({role: 'user', content: m.content}); return; }
        var parts = imgs.map(function (im) { return {type: 'image_url', image_url: {url: im.url}}; });
        parts.push({type: 'text', text: m.content});
        out.push({role: 'user', content: parts});
      } else if (!m.error || m.content) {
        out.push({role: 'assistant', content: m.content || ''});
      }
    });
    return out;
  }

  function setBusy(on) {
    $('send').disabled = on;
    $('stop').disabled = !on;
    $('new-chat').disabled = on;
  }

  async function send() {
    if (busy) return;
    var text = $('prompt').value;
    if (!text.trim() && !pending.length) { setStatus('Type a message first.', true); return; }
    var user = {role: 'user', content: text, images: pending.slice(), time: new Date().toISOString()};
    var s = state.settings;
    var body = {
      model: info ? info.model.id : undefined,
      messages: null,
      stream: true,
      stream_options: {include_usage: true},
      temperature: s.temperature,
      top_p: s.top_p,
      max_tokens: s.max_tokens
    };
    if (info && info.model.thinking) body.chat_template_kwargs = {enable_thinking: !!s.thinking};
    state.conversation.messages.push(user);
    body.messages = apiMessages();
    var json = JSON.stringify(body);
    if (json.length > MAX_BODY_BYTES) {
      state.conversation.messages.pop();
      setStatus('The conversation with its images is ' + fmtBytes(json.length) +
                ', over what the server takes; remove images or start a new chat.', true);
      return;
    }
    pending = [];
    showPending();
    $('prompt').value = '';
    var reply = {role: 'assistant', content: '', reasoning: '', stats: null, time: new Date().toISOString()};
    state.conversation.messages.push(reply);
    if (info) state.conversation.model = info.model.id;
    save();
    renderAll();
    var node = $('messages').lastChild;
    node.fill(true);
    var ctrl = new AbortController();
    busy = {ctrl: ctrl};
    setBusy(true);
    setStatus('Generating…');
    var t0 = performance.now(), tFirst = null, tLast = null, deltas = 0, usage = null, finish = null;
    var scheduled = false;
    function paint() {
      scheduled = false;
      var list = $('messages');
      var stick = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
      node.fill(!!busy);
      if (stick) list.scrollTop = list.scrollHeight;
    }
    function schedule() {
      if (!scheduled) { scheduled = true; requestAnimationFrame(paint); }
    }
    function onChunk(obj) {
      if (obj.usage) usage = obj.usage;
      var ch = obj.choices && obj.choices[0];
      if (!ch) return;
      var d = ch.delta || {};
      var got = false;
      if (d.reasoning_content) { reply.reasoning += d.reasoning_content; got = true; }
      if (d.content) { reply.content += d.content; got = true; }
      if (got) {
        var now = performance.now();
        if (tFirst == null) tFirst = now;
        tLast = now;
        deltas++;
        schedule();
      }
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    try {
      var resp = await fetch('/v1/chat/completions', {method: 'POST', headers: headers(true), body: json, signal: ctrl.signal});
      if (!resp.ok) throw new Error(await errorMessage(resp));
      var reader = resp.body.getReader(), dec = new TextDecoder(), buf = '';
      for (;;) {
        var r = await reader.read();
        if (r.done) break;
        buf += dec.decode(r.value, {stream: true});
        var cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          var ev = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          ev.split('\n').forEach(function (line) {
            if (line.indexOf('data:') !== 0) return;
            var data = line.slice(5).trim();
            if (!data || data === '[DONE]') return;
            var obj = JSON.parse(data);
            if (obj.error) throw new Error(obj.error.message || 'error');
            onChunk(obj);
          });
        }
      }
    } catch (e) {
      if (e.name === 'AbortError') finish = 'stopped';
      else reply.error = 'Error: ' + e.message;
    }
    var tokens = usage ? usage.completion_tokens : deltas;
    var st = {tokens: tokens, finish: finish};
    if (tFirst != null) st.ttft_ms = tFirst - t0;
    if (tFirst != null && tLast > tFirst && tokens > 1) st.tps = (tokens - 1) / ((tLast - tFirst) / 1000);
    reply.stats = st;
    busy = null;
    setBusy(false);
    paint();
    save();
    setStatus(reply.error ? reply.error : finish === 'stopped' ? 'Stopped.' : 'Done.', !!reply.error);
    $('prompt').focus();
  }

  function stop() {
    if (busy) busy.ctrl.abort();
  }

  $('composer').addEventListener('submit', function (e) { e.preventDefault(); send(); });
  $('prompt').addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  $('stop').addEventListener('click', stop);
  document.addEventListener('keydown', function (e) { if (e.key === 'Escape' && busy) stop(); });

  $('new-chat').addEventListener('click', function () {
    if (busy) return;
    state.conversation = emptyConversation();
    save();
    renderAll();
    setStatus('New conversation.');
    $('prompt').focus();
  });

  $('export').addEventListener('click', function () {
    var doc = {
      exported: new Date().toISOString(),
      model: state.conversation.model || (info && info.model.id) || null,
      settings: {system: state.settings.system, temperature: state.settings.temperature, top_p: state.settings.top_p,
                 max_tokens: state.settings.max_tokens, thinking: state.settings.thinking},
      messages: state.conversation.messages
    };
    var blob = new Blob([JSON.stringify(doc, null, 2)], {type: 'application/json'});
    var a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'optiq-conversation-' + doc.exported.replace(/[:.]/g, '-') + '.json';
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    setStatus('Exported ' + state.conversation.messages.length + ' messages.');
  });

  /* ---- server page ---- */

  function kv(dl, rows) {
    dl.replaceChildren();
    rows.forEach(function (r) {
      if (r[1] == null || r[1] === '') return;
      dl.appendChild(h('dt', null, r[0]));
      dl.appendChild(h('dd', null, String(r[1])));
    });
  }

  async function loadInfo() {
    try {
      var resp = await fetch('/info', {headers: headers(false)});
      if (resp.status === 401) {
        $('model-badge').textContent = 'the server needs an API key (Settings)';
        $('settings').open = true;
        info = null;
        return;
      }
      if (!resp.ok) throw new Error(await errorMessage(resp));
      info = await resp.json();
    } catch (e) {
      $('model-badge').textContent = 'server unreachable: ' + e.message;
      return;
    }
    var m = info.model;
    $('model-badge').textContent = m.id + ' · ' + m.model_type + (m.vision ? ' · vision' : '') +
      (m.folder && m.folder.language ? ' · ' + m.folder.language.bits_per_weight.toFixed(2) + ' bits/weight' : '');
    $('thinking').disabled = !m.thinking;
    $('thinking-note').hidden = !!m.thinking;
    $('attach').disabled = !m.vision;
    $('attach-note').textContent = m.vision ? 'PNG, JPEG, GIF, WebP or BMP, at most 8 MB each'
                                            : 'this model takes no images (no vision sidecar)';
    fillServer();
  }

  function fillServer() {
    if (!info) return;
    var m = info.model, f = m.folder || {}, a = f.architecture || {}, lang = f.language || {}, q = f.quantization || {};
    var vis = f.vision || {};
    kv($('model-info'), [
      ['id', m.id],
      ['model type', m.model_type + (f.text_model_type ? ' (' + f.text_model_type + ')' : '')],
      ['architecture', (f.architectures || []).join(', ')],
      ['family', a.family ? a.family + (a.variant ? ' · ' + a.variant : '') : null],
      ['layers', a.layers],
      ['hidden size', a.hidden_size],
      ['vocabulary', m.vocab_size],
      ['context', m.context + ' tokens'],
      ['parameters', lang.parameters != null ? fmtCount(lang.parameters) + ' (language)' : null],
      ['weights', lang.file_bytes != null ? fmtBytes(lang.file_bytes) : null],
      ['vision', m.vision ? 'yes' + (vis.parameters ? ' (sidecar, ' + fmtCount(vis.parameters) + ' parameters)' : '') : 'no'],
      ['thinking', m.thinking ? 'yes' : 'no']
    ]);
    var feats = $('features');
    feats.replaceChildren();
    (a.features || []).forEach(function (t) { feats.appendChild(h('li', null, t)); });
    var d = q.default || {};
    kv($('quant-info'), [
      ['quantized', q.present ? 'yes' : 'no'],
      ['effective bits per weight', lang.bits_per_weight != null ? lang.bits_per_weight.toFixed(3) : null],
      ['default', q.present && d.bits ? d.bits + '-bit ' + (d.mode || '') + ', group ' + d.group_size : null],
      ['quantized modules', q.quantized_modules],
      ['per-module overrides', q.overrides],
      ['unquantized modules', q.unquantized_modules ? q.unquantized_modules.length : null]
    ]);
    var tb = $('bits-table').tBodies[0];
    tb.replaceChildren();
    var hw = q.histogram_bits_to_weight_count || {}, hm = q.histogram_bits_to_module_count || {};
    var total = Object.keys(hw).reduce(function (s, k) { return s + hw[k]; }, 0);
    Object.keys(hw).sort(function (x, y) { return Number(x) - Number(y); }).forEach(function (bits) {
      var tr = h('tr');
      var share = total ? hw[bits] / total : 0;
      tr.appendChild(h('td', null, bits));
      tr.appendChild(h('td', null, String(hm[bits] || 0)));
      tr.appendChild(h('td', null, fmtCount(hw[bits])));
      var td = h('td', 'bar');
      var fill = h('div', 'fill');
      fill.style.width = (share * 100).toFixed(1) + '%';
      td.appendChild(fill);
      td.appendChild(h('span', 'note', (share * 100).toFixed(1) + '%'));
      tr.appendChild(td);
      tb.appendChild(tr);
    });
    var s = info.server;
    kv($('server-info'), [
      ['version', s.version],
      ['listening on', s.host + ':' + s.port],
      ['threads', s.threads],
      ['numerics', s.exact ? 'exact (f32 activations)' : 'fast path'],
      ['parallel generations', s.parallel],
      ['queue limit', s.max_queue],
      ['API key', s.api_key_required ? 'required' : 'not required'],
      ['remote images', s.allow_remote_images ? 'allowed, up to ' + fmtBytes(s.max_image_bytes) : 'off'],
      ['request body limit', fmtBytes(s.max_body_bytes)],
      ['timeouts', 'idle ' + s.timeout_s + ' s, headers ' + s.header_timeout_s + ' s, body ' + s.body_timeout_s + ' s'],
      ['started', new Date(s.started * 1000).toLocaleString()]
    ]);
  }

  // Prometheus text → {name or name{labels}: value}
  function parseMetrics(text) {
    var out = {};
    text.split('\n').forEach(function (line) {
      if (!line || line[0] === '#') return;
      var sp = line.lastIndexOf(' ');
      if (sp > 0) out[line.slice(0, sp)] = Number(line.slice(sp + 1));
    });
    return out;
  }

  var lastMetrics = null, refreshing = false;
  async function refreshServer() {
    if (refreshing) return;
    refreshing = true;
    try {
      if (!info) await loadInfo();
      var resp = await fetch('/metrics', {headers: headers(false)});
      if (!resp.ok) throw new Error(await errorMessage(resp));
      var mt = parseMetrics(await resp.text()), now = performance.now();
      var gen = mt.optiq_generated_tokens_total || 0, dec = mt.optiq_decode_seconds_total || 0;
      var recent = null;
      if (lastMetrics && now > lastMetrics.t)
        recent = (gen - lastMetrics.gen) / ((now - lastMetrics.t) / 1000);
      lastMetrics = {t: now, gen: gen};
      var ttftN = mt.optiq_time_to_first_token_seconds_count || 0;
      kv($('live-info'), [
        ['active requests', mt.optiq_active_generations],
        ['waiting', mt.optiq_queue_depth],
        ['requests', (mt['optiq_requests_total{outcome="ok"}'] || 0) + ' ok, ' +
                     (mt['optiq_requests_total{outcome="error"}'] || 0) + ' failed, ' +
                     (mt['optiq_requests_total{outcome="rejected"}'] || 0) + ' rejected'],
        ['generated tokens', gen],
        ['tokens/s, recent', recent == null ? '—' : recent.toFixed(1)],
        ['mean decode speed', dec > 0 ? (gen / dec).toFixed(1) + ' tok/s' : '—'],
        ['mean time to first token', ttftN ? Math.round(mt.optiq_time_to_first_token_seconds_sum / ttftN * 1000) + ' ms' : '—']
      ]);
      $('server-status').textContent = 'Updated ' + new Date().toLocaleTimeString();
    } catch (e) {
      $('server-status').textContent = 'Cannot read /metrics: ' + e.message;
    } finally {
      refreshing = false;
    }
  }
  setInterval(function () { if (!$('panel-server').hidden) refreshServer(); }, 2000);

  /* ---- start ---- */
  showSettings();
  renderAll();
  loadInfo();
})();
