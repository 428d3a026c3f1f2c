/*
 * markdown.js — a small, safe Markdown renderer for model output.
 *
 * Safety: the text is never parsed as HTML. Every piece of it reaches the
 * page as a DOM text node (textContent / createTextNode); the renderer only
 * creates a fixed set of elements (p, br, h1-h6, pre, code, strong, em, del,
 * ul, ol, li, blockquote, hr, table parts, a). HTML tags written by the model
 * therefore show as text, and links are made only for http(s) URLs, opened
 * in a new tab without referrer or opener. (The page's Content-Security-Policy
 * forbids inline scripts besides.)
 *
 * Blocks: fenced code (``` or ~~~, optional language; an unclosed fence runs
 * to the end, as while a reply streams), ATX headings, thematic breaks,
 * blockquotes, bullet and ordered lists (nested by indentation), pipe tables
 * with a delimiter row (alignment honoured), paragraphs (a single newline is
 * a line break, as chat replies expect). Inline: `code`, **bold** / __bold__,
 * *italic* / _italic_, ~~strike~~, [text](http(s)://url), <http(s)://url>,
 * backslash escapes.
 *
 * API: OptiqMarkdown.render(text) returns a DocumentFragment.
 */
(function (global) {
  'use strict';

  var SAFE_URL = /^https?:\/\/[^\s<>"'`]+$/i;

  function el(tag, cls) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    return e;
  }

  function link(href, children) {
    var a = el('a');
    a.href = href;
    a.rel = 'noopener noreferrer nofollow';
    a.target = '_blank';
    children.forEach(function (c) { a.appendChild(c); });
    return a;
  }

  /* ---- inline ---- */

  // Index of the closing delimiter `d` at or after i whose preceding char is not whitespace.
  function findClose(s, d, i) {
    for (;;) {
      var k = s.indexOf(d, i);
      if (k < 0) return -1;
      if (k > 0 && !/\s/.test(s[k - 1]) && s[k - 1] !== '\\') return k;
      i = k + 1;
    }
  }

  function inline(s, depth) {
    var out = [], buf = '', i = 0;
    depth = depth || 0;
    function flush() {
      if (buf) out.push(document.createTextNode(buf));
      buf = '';
    }
    while (i < s.length) {
      var c = s[i];
      if (c === '\\' && i + 1 < s.length && /[\\`*_{}\[\]()#+\-.!|~<>]/.test(s[i + 1])) {
        buf += s[i + 1];
        i += 2;
        continue;
      }
      if (c === '`') {
        var run = /^`+/.exec(s.slice(i))[0];
        var end = s.indexOf(run, i + run.length);
        if (end > 0) {
          flush();
          var code = el('code');
          var body = s.slice(i + run.length, end);
          if (body.length > 1 && body[0] === ' ' && body[body.length - 1] === ' ') body = body.slice(1, -1);
          code.textContent = body;
          out.push(code);
          i = end + run.length;
          continue;
        }
        buf += run;
        i += run.length;
        continue;
      }
      if (depth < 8 && (s.startsWith('**', i) || s.startsWith('__', i) || s.startsWith('~~', i))) {
        var d2 = s.substr(i, 2);
        var intraword = d2 === '__' && i > 0 && /[A-Za-z0-9]/.test(s[i - 1]);
        var close2 = (!intraword && i + 2 < s.length && !/\s/.test(s[i + 2])) ? findClose(s, d2, i + 3) : -1;
        if (close2 > 0) {
          flush();
          var strong = el(d2 === '~~' ? 'del' : 'strong');
          inline(s.slice(i + 2, close2), depth + 1).forEach(function (n) { strong.appendChild(n); });
          out.push(strong);
          i = close2 + 2;
          continue;
        }
      }
      if (depth < 8 && (c === '*' || c === '_')) {
        // _ inside a word (snake_case) is not emphasis
        var wordBefore = i > 0 && /[A-Za-z0-9]/.test(s[i - 1]);
        if (!(c === '_' && wordBefore) && i + 1 < s.length && !/\s/.test(s[i + 1]) && s[i + 1] !== c) {
          var close1 = findClose(s, c, i + 2);
          while (close1 > 0 && s[close1 + 1] === c) close1 = findClose(s, c, close1 + 2);
          if (close1 > 0 && !(c === '_' && /[A-Za-z0-9]/.test(s[close1 + 1] || ''))) {
            flush();
            var em = el('em');
            inline(s.slice(i + 1, close1), depth + 1).forEach(function (n) { em.appendChild(n); });
            out.push(em);
            i = close1 + 1;
            continue;
          }
        }
      }
      if (c === '[' && depth < 8) {
        var m = /^\[([^\]\n]{1,500})\]\(([^()\s]{1,2000})\)/.exec(s.slice(i));
        if (m) {
          flush();
          if (SAFE_URL.test(m[2])) out.push(link(m[2], inline(m[1], depth + 1)));
          else inline(m[1], depth + 1).forEach(function (n) { out.push(n); }); // unsafe scheme: text only
          i += m[0].length;
          continue;
        }
      }
      if (c === '!' && s[i + 1] === '[') {
        // images are not loaded (external origins are off); show the alt text as a link when safe
        var mi = /^!\[([^\]\n]{0,500})\]\(([^()\s]{1,2000})\)/.exec(s.slice(i));
        if (mi) {
          flush();
          var alt = document.createTextNode(mi[1] || mi[2]);
          out.push(SAFE_URL.test(mi[2]) ? link(mi[2], [alt]) : alt);
          i += mi[0].length;
          continue;
        }
      }
      if (c === '<') {
        var ma = /^<(https?:\/\/[^\s<>]{1,2000})>/i.exec(s.slice(i));
        if (ma) {
          flush();
          out.push(link(ma[1], [document.createTextNode(ma[1])]));
          i += ma[0].length;
          continue;
        }
      }
      buf += c;
      i++;
    }
    flush();
    return out;
  }

  function appendInline(parent, text) {
    inline(text, 0).forEach(function (n) { parent.appendChild(n); });
  }

  // Paragraph text: lines joined by <br>.
  function appendLines(parent, lines) {
    lines.forEach(function (line, k) {
      if (k) parent.appendChild(el('br'));
      appendInline(parent, line.trim());
    });
  }

  /* ---- blocks ---- */

  var FENCE = /^( {0,3})(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
  var HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
  var HR = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
  var QUOTE = /^ {0,3}> ?/;
  var LIST = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;

  function splitRow(line) {
    var t = line.trim();
    if (t[0] === '|') t = t.slice(1);
    if (t[t.length - 1] === '|' && t[t.length - 2] !== '\\') t = t.slice(0, -1);
    var cells = [], cur = '';
    for (var i = 0; i < t.length; i++) {
      if (t[i] === '\\' && t[i + 1] === '|') { cur += '|'; i++; continue; }
      if (t[i] === '|') { cells.push(cur.trim()); cur = ''; continue; }
      cur += t[i];
    }
    cells.push(cur.trim());
    return cells;
  }

  function isDelimRow(line) {
    if (line.indexOf('-') < 0 || line.indexOf('|') < 0 && !/^\s*:?-+:?\s*$/.test(line)) return false;
    return splitRow(line).every(function (c) { return /^:?-{1,}:?$/.test(c); });
  }

  function table(lines, start) {
    var head = splitRow(lines[start]);
    var aligns = splitRow(lines[start + 1]).map(function (c) {
      var l = c[0] === ':', r = c[c.length - 1] === ':';
      return l && r ? 'center' : r ? 'right' : l ? 'left' : '';
    });
    var wrap = el('div', 'md-table');
    var t = el('table'), thead = el('thead'), tr = el('tr');
    head.forEach(function (h, k) {
      var th = el('th');
      th.scope = 'col';
      if (aligns[k]) th.className = 'align-' + aligns[k];
      appendInline(th, h);
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    t.appendChild(thead);
    var tbody = el('tbody'), i = start + 2;
    while (i < lines.length && lines[i].trim() && lines[i].indexOf('|') >= 0) {
      var row = el('tr'), cells = splitRow(lines[i]);
      for (var k = 0; k < head.length; k++) {
        var td = el('td');
        if (aligns[k]) td.className = 'align-' + aligns[k];
        appendInline(td, cells[k] || '');
        row.appendChild(td);
      }
      tbody.appendChild(row);
      i++;
    }
    t.appendChild(tbody);
    wrap.appendChild(t);
    return {node: wrap, next: i};
  }

  function indentOf(s) {
    var n = 0;
    for (var i = 0; i < s.length; i++) {
      if (s[i] === ' ') n++;
      else if (s[i] === '\t') n += 4;
      else break;
    }
    return n;
  }

  // A list starting at lines[start]; items nest by indentation.
  function list(lines, start, depth) {
    var first = LIST.exec(lines[start]);
    var base = indentOf(first[1]);
    var ordered = /\d/.test(first[2]);
    var node = el(ordered ? 'ol' : 'ul');
    if (ordered) {
      var n = parseInt(first[2], 10);
      if (n !== 1) node.start = n;
    }
    var i = start, item = null, itemLines = [];
    function closeItem() {
      if (item) appendLines(item, itemLines);
      itemLines = [];
    }
    while (i < lines.length) {
      var line = lines[i];
      if (!line.trim()) {
        // a blank line ends the list unless an item of it follows
        var j = i + 1;
        while (j < lines.length && !lines[j].trim()) j++;
        var nm = j < lines.length ? LIST.exec(lines[j]) : null;
        if (nm && indentOf(nm[1]) >= base && (indentOf(nm[1]) > base || /\d/.test(nm[2]) === ordered)) {
          i = j;
          continue;
        }
        break;
      }
      var m = LIST.exec(line);
      if (m) {
        var ind = indentOf(m[1]);
        if (ind < base) break;
        if (ind > base && item && depth < 8) {
          closeItem();
          var sub = list(lines, i, depth + 1);
          item.appendChild(sub.node);
          i = sub.next;
          continue;
        }
        if (ind === base || !item) {
          if (/\d/.test(m[2]) !== ordered) break;
          closeItem();
          item = el('li');
          node.appendChild(item);
          itemLines = [m[3]];
          i++;
          continue;
        }
      }
      if (!m && indentOf(line) > base && item) { // continuation of the item
        itemLines.push(line);
        i++;
        continue;
      }
      if (!m && item && !FENCE.test(line) && !HEADING.test(line) && !QUOTE.test(line)) { // lazy continuation
        itemLines.push(line);
        i++;
        continue;
      }
      break;
    }
    closeItem();
    return {node: node, next: i};
  }

  function blocks(text, depth) {
    var frag = document.createDocumentFragment();
    var lines = text.replace(/\r\n?/g, '\n').split('\n');
    var i = 0, para = [];
    function flushPara() {
      if (!para.length) return;
      var p = el('p');
      appendLines(p, para);
      frag.appendChild(p);
      para = [];
    }
    while (i < lines.length) {
      var line = lines[i], m;
      if (!line.trim()) { flushPara(); i++; continue; }
      if ((m = FENCE.exec(line))) {
        flushPara();
        var fence = m[2], lang = m[3], body = [];
        i++;
        while (i < lines.length && !(lines[i].trim().startsWith(fence[0].repeat(fence.length)) &&
                                     /^\s*[`~]+\s*$/.test(lines[i]))) {
          body.push(lines[i]);
          i++;
        }
        i++; // the closing fence (or past the end)
        var pre = el('pre'), code = el('code');
        if (lang) {
          code.className = 'language-' + lang.replace(/[^\w+-]/g, '');
          pre.dataset.lang = lang.replace(/[^\w+#.-]/g, '').slice(0, 32);
        }
        code.textContent = body.join('\n');
        pre.appendChild(code);
        frag.appendChild(pre);
        continue;
      }
      if ((m = HEADING.exec(line))) {
        flushPara();
        var h = el('h' + m[1].length);
        appendInline(h, m[2] || '');
        frag.appendChild(h);
        i++;
        continue;
      }
      if (HR.test(line) && !para.length) {
        frag.appendChild(el('hr'));
        i++;
        continue;
      }
      if (QUOTE.test(line)) {
        flushPara();
        var q = [];
        while (i < lines.length && lines[i].trim() && QUOTE.test(lines[i])) {
          q.push(lines[i].replace(QUOTE, ''));
          i++;
        }
        var bq = el('blockquote');
        if (depth < 8) bq.appendChild(blocks(q.join('\n'), depth + 1));
        else appendLines(bq, q);
        frag.appendChild(bq);
        continue;
      }
      if (LIST.test(line) && !HR.test(line)) {
        flushPara();
        var l = list(lines, i, 0);
        frag.appendChild(l.node);
        i = l.next;
        continue;
      }
      if (line.indexOf('|') >= 0 && i + 1 < lines.length && isDelimRow(lines[i + 1]) &&
          splitRow(line).length === splitRow(lines[i + 1]).length) {
        flushPara();
        var t = table(lines, i);
        frag.appendChild(t.node);
        i = t.next;
        continue;
      }
      para.push(line);
      i++;
    }
    flushPara();
    return frag;
  }

  global.OptiqMarkdown = {
    render: function (text) { return blocks(String(text == null ? '' : text), 0); }
  };
})(window);
