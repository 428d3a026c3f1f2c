"""The Lab (web/lab/) in headless Chromium, driven by Selenium, against a
running `optiq lab` (started by tests/test_lab.sh).

HTTP checks of the static files and of /info run first with the standard
library only; the browser checks follow unless --no-browser is given (no
Chromium: test_lab.sh says why). Prints one "ok"/"not ok" line per case and
"N passed, N failed" at the end. Screenshots go to --artifacts.
"""
import argparse
import http.client
import json
import os
import re
import sys
import time
import urllib.parse

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok {name}")
    else:
        failed += 1
        print(f"not ok {name}{': ' + str(detail) if detail else ''}")
    sys.stdout.flush()
    return cond


def raw_request(base, method, path, body=None, headers=None):
    """A request with the path sent exactly as given (no normalization)."""
    u = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.putrequest(method, path, skip_accept_encoding=True)
    for k, v in (headers or {}).items():
        c.putheader(k, v)
    if body is not None:
        c.putheader("Content-Length", str(len(body)))
    c.endheaders()
    if body is not None:
        c.send(body)
    r = c.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, hdrs, data


def metrics(base):
    st, _, data = raw_request(base, "GET", "/metrics")
    out = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


# ---- HTTP -----------------------------------------------------------------

def http_checks(base, model_dir):
    st, h, body = raw_request(base, "GET", "/lab/")
    check("GET /lab/ is the page", st == 200 and h.get("content-type", "").startswith("text/html")
          and b"<title>optiq Lab</title>" in body, (st, h.get("content-type")))
    with open(os.path.join(ROOT, "web/lab/index.html"), "rb") as f:
        check("the page is the embedded web/lab/index.html", body == f.read())
    csp = h.get("content-security-policy", "")
    check("CSP: scripts from the page's origin only, no inline",
          "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp, csp)
    check("nosniff header", h.get("x-content-type-options") == "nosniff")
    for path, ctype in [("/lab/lab.js", "text/javascript"), ("/lab/markdown.js", "text/javascript"),
                        ("/lab/lab.css", "text/css"), ("/lab/icon.svg", "image/svg+xml")]:
        st, h, body = raw_request(base, "GET", path)
        with open(os.path.join(ROOT, "web/lab", path[5:]), "rb") as f:
            same = body == f.read()
        check(f"GET {path}: {ctype}, same bytes as the file", st == 200 and h.get("content-type", "").startswith(ctype)
              and same, (st, h.get("content-type"), len(body)))
    for path in ["/lab/../Makefile", "/lab/%2e%2e/Makefile", "/lab/../../etc/passwd", "/lab//lab.js",
                 "/lab/web/lab/lab.js", "/lab/lab.js/", "/lab/nothing.html"]:
        st, h, body = raw_request(base, "GET", path)
        ok = st == 404 and b"root:" not in body and b"BUILD" not in body
        try:
            ok = ok and "message" in json.loads(body)["error"]
        except Exception:
            ok = False
        check(f"GET {path} is a 404 (no file system access)", ok, (st, body[:120]))
    st, h, _ = raw_request(base, "GET", "/")
    check("GET / redirects to /lab/", st == 302 and h.get("location") == "/lab/", (st, h.get("location")))
    st, h, _ = raw_request(base, "GET", "/lab")
    check("GET /lab redirects to /lab/", st == 302 and h.get("location") == "/lab/", (st, h.get("location")))
    st, h, _ = raw_request(base, "POST", "/lab/", body=b"{}")
    check("POST /lab/ is a 405 with Allow", st == 405 and "GET" in h.get("allow", ""), (st, h.get("allow")))
    st, h, body = raw_request(base, "HEAD", "/lab/lab.js")
    check("HEAD /lab/lab.js answers without a body", st == 200 and body == b"", (st, len(body)))

    st, h, body = raw_request(base, "GET", "/info")
    info = json.loads(body) if st == 200 else {}
    m = info.get("model", {})
    folder = m.get("folder") or {}
    check("GET /info: model id, type, vision, thinking, context",
          m.get("id") == os.path.basename(model_dir.rstrip("/")) and m.get("model_type") == "qwen3_5"
          and m.get("vision") is True and m.get("thinking") is True and m.get("context") == 512, m)
    q = folder.get("quantization", {})
    check("GET /info: the bits histogram and bits per weight of optiq inspect",
          q.get("histogram_bits_to_weight_count") == INSPECT["quantization"]["histogram_bits_to_weight_count"]
          and folder.get("language", {}).get("bits_per_weight") == INSPECT["language"]["bits_per_weight"],
          q.get("histogram_bits_to_weight_count"))
    check("GET /info: no server path in it", "path" not in folder and model_dir not in body.decode(),
          [k for k in folder])
    s = info.get("server", {})
    check("GET /info: server settings", s.get("parallel") == 2 and s.get("max_queue") == 64
          and s.get("api_key_required") is False and s.get("port") == urllib.parse.urlparse(base).port
          and s.get("threads", 0) >= 1 and isinstance(s.get("version"), str), s)
    st, h, body = raw_request(base, "POST", "/info", body=b"{}")
    check("POST /info is a 405", st == 405, st)
    return info


# ---- browser --------------------------------------------------------------

def browser_checks(base, args, info):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    downloads = os.path.join(args.work, "downloads")
    os.makedirs(downloads, exist_ok=True)
    os.makedirs(args.artifacts, exist_ok=True)
    opts = Options()
    opts.binary_location = args.chromium
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,900", f"--user-data-dir={os.path.join(args.work, 'profile')}",
              "--no-first-run", "--disable-extensions"]:
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": downloads,
                                           "download.prompt_for_download": False})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(args.chromedriver), options=opts)
    d.set_script_timeout(30)
    try:
        d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    except Exception:
        pass

    def wait(cond, timeout=15, step=0.05):
        end = time.time() + timeout
        while time.time() < end:
            try:
                v = cond()
                if v:
                    return v
            except Exception:
                pass
            time.sleep(step)
        return None

    def js(src, *a):
        return d.execute_script(src, *a)

    def set_field(id_, value):
        js("var e = document.getElementById(arguments[0]);"
           "if (e.type === 'checkbox') e.checked = arguments[1]; else e.value = arguments[1];"
           "e.dispatchEvent(new Event('change'));", id_, value)

    def assistant_state():
        return js("var a = document.querySelectorAll('#messages .msg.assistant'); var m = a[a.length - 1];"
                  "if (!m) return null; return {answer: m.querySelector('.answer').textContent,"
                  " reasoning: m.querySelector('.reasoning .text').textContent,"
                  " reasoningHidden: m.querySelector('.reasoning').hidden,"
                  " reasoningOpen: m.querySelector('.reasoning').open,"
                  " streaming: m.querySelector('.answer').classList.contains('cursor'),"
                  " stats: m.querySelector('.stats').textContent, error: m.querySelector('.error').textContent,"
                  " n: a.length};")

    def last_log_line(after):
        with open(args.server_log, errors="replace") as f:
            lines = [l for l in f.read().splitlines() if " POST /v1/chat/completions " in l]
        return lines[after:] if len(lines) > after else []

    def n_posts():
        with open(args.server_log, errors="replace") as f:
            return sum(1 for l in f if " POST /v1/chat/completions " in l)

    def send(text):
        box = d.find_element(By.ID, "prompt")
        box.click()
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def wait_done(timeout=60):
        return wait(lambda: (lambda s: s if s and not s["streaming"] and s["stats"] else None)(assistant_state()),
                    timeout)

    try:
        d.get(base + "/lab/")
        badge = wait(lambda: (lambda t: t if info["model"]["id"] in t else None)(
            d.find_element(By.ID, "model-badge").text))
        check("the page loads and shows the model from /info", badge is not None, d.find_element(By.ID, "model-badge").text)
        check("attach button enabled for a vision model", d.find_element(By.ID, "attach").is_enabled())

        # ---- Markdown: formatting, and model text never becomes HTML ----
        r = js(r"""
            window.pwned = 0;
            var src = '<img src=x onerror="window.pwned=1"><script>window.pwned=2<\/script> **bold** *it* `c<i>` snake_case_name\n\n' +
              '[bad](javascript:window.pwned=3) [good](https://example.com/a?b=1) <b onclick="x()">b</b>\n\n' +
              '```js\n<b>code</b>\n```\n\n| a | b |\n|:--|--:|\n| 1 | <u>2</u> |\n\n- one\n- two\n  - nested\n\n1. first\n2. second\n\n# Title\n\n> quote';
            var box = document.createElement('div');
            box.appendChild(OptiqMarkdown.render(src));
            document.body.appendChild(box);
            var out = {
              img: box.querySelectorAll('img').length, script: box.querySelectorAll('script').length,
              b: box.querySelectorAll('b, i, u').length, strong: box.querySelectorAll('strong').length,
              em: box.querySelectorAll('em').length,
              links: Array.prototype.map.call(box.querySelectorAll('a'), function (a) { return a.getAttribute('href'); }),
              rel: (box.querySelector('a') || {}).rel,
              code: (box.querySelector('pre code') || {}).textContent, lang: (box.querySelector('pre code') || {}).className,
              inlineCode: (box.querySelector('p code') || {}).textContent,
              th: box.querySelectorAll('th').length, td: box.querySelectorAll('td').length,
              tdText: (box.querySelectorAll('td')[1] || {}).textContent,
              align: (box.querySelectorAll('td')[1] || {}).className,
              ul: box.querySelectorAll(':scope > ul > li').length, nested: box.querySelectorAll('ul ul li').length,
              ol: box.querySelectorAll('ol > li').length, h1: (box.querySelector('h1') || {}).textContent,
              quote: (box.querySelector('blockquote') || {}).textContent,
              text: box.textContent, onattr: box.querySelectorAll('[onerror], [onclick]').length
            };
            box.remove();
            return new Promise(function (res) { setTimeout(function () { out.pwned = window.pwned; res(out); }, 200); });
        """)
        check("markdown: HTML in model text stays text (no img/script/b elements, no handlers)",
              r["img"] == 0 and r["script"] == 0 and r["b"] == 0 and r["onattr"] == 0 and r["pwned"] == 0
              and '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>' in r["text"], r)
        check("markdown: links only for http(s), opened without opener",
              r["links"] == ["https://example.com/a?b=1"] and "noopener" in (r["rel"] or ""), r["links"])
        check("markdown: bold, italic, inline code; snake_case stays as is", r["strong"] == 1 and r["em"] == 1
              and r["inlineCode"] == "c<i>" and "snake_case_name" in r["text"], r)
        check("markdown: fenced code block keeps its text", r["code"] == "<b>code</b>" and r["lang"] == "language-js", r)
        check("markdown: table with alignment", r["th"] == 2 and r["td"] == 2 and r["tdText"] == "<u>2</u>"
              and r["align"] == "align-right", r)
        check("markdown: lists (nested, ordered), heading, quote", r["ul"] == 2 and r["nested"] == 1 and r["ol"] == 2
              and r["h1"] == "Title" and r["quote"].strip() == "quote", r)

        # ---- a streamed answer ----
        set_field("thinking", False)
        set_field("temperature", 0.7)
        set_field("max-tokens", 60)
        posts0 = n_posts()
        send("Hello there")
        lengths = []
        t_end = time.time() + 30
        while time.time() < t_end:
            s = assistant_state()
            if s:
                lengths.append(len(s["answer"]))
                if not s["streaming"] and s["stats"]:
                    break
            time.sleep(0.03)
        s = assistant_state()
        grew = sorted(set(l for l in lengths if l > 0))
        check("typed message shows as the user's turn",
              js("var u = document.querySelectorAll('#messages .msg.user'); return u.length && u[u.length-1].textContent;")
              .endswith("Hello there"))
        check("the answer streams in (grows over several updates)", len(grew) >= 3, lengths[:40])
        check("the reply finishes with tokens, tok/s and time to first token",
              s and re.search(r"\d+ tokens · [\d.]+ tok/s · first token \d+ ms", s["stats"]) is not None,
              s and s["stats"])
        lines = last_log_line(posts0)
        check("the server saw one chat request for it", len(lines) == 1 and " 200 " in lines[0], lines)

        # ---- thinking on: reasoning shown collapsed, apart from the answer ----
        set_field("thinking", True)
        set_field("max-tokens", 30)
        send("Think first")
        s = wait_done()
        check("with thinking on, the reasoning is in a collapsed block apart from the answer",
              s and not s["reasoningHidden"] and not s["reasoningOpen"] and len(s["reasoning"]) > 0, s)
        set_field("thinking", False)

        # ---- images: file input, synthetic drop, size and type checks ----
        img = os.path.join(args.model, "images", "img0.png")
        d.find_element(By.ID, "file-input").send_keys(img)
        check("an image attached by the file input shows a thumbnail",
              wait(lambda: js("return document.querySelectorAll('#attachments img').length") == 1) is not None)
        dropped = d.execute_async_script(r"""
            var done = arguments[arguments.length - 1];
            var c = document.createElement('canvas'); c.width = 48; c.height = 32;
            var g = c.getContext('2d'); g.fillStyle = '#c33'; g.fillRect(0, 0, 48, 32); g.fillStyle = '#3c3'; g.fillRect(8, 8, 20, 12);
            c.toBlob(function (blob) {
              var dt = new DataTransfer();
              dt.items.add(new File([blob], 'dropped.png', {type: 'image/png'}));
              var target = document.getElementById('messages');
              ['dragenter', 'dragover', 'drop'].forEach(function (type) {
                target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
              });
              done(true);
            }, 'image/png');
        """)
        check("an image dropped (synthetic drop event) shows a second thumbnail", dropped and
              wait(lambda: js("return document.querySelectorAll('#attachments img').length") == 2) is not None)
        check("the drop overlay is gone after the drop", js("return document.getElementById('drop-overlay').hidden"))
        d.execute_async_script(r"""
            var done = arguments[arguments.length - 1];
            var dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(9 * 1024 * 1024)], 'huge.png', {type: 'image/png'}));
            dt.items.add(new File(['hello'], 'notes.txt', {type: 'text/plain'}));
            document.getElementById('messages').dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: dt}));
            setTimeout(function () { done(true); }, 300);
        """)
        st = d.find_element(By.ID, "status").text
        check("an oversized image and a non-image are refused before upload, with a message",
              js("return document.querySelectorAll('#attachments img').length") == 2
              and "huge.png" in st and "limit" in st and "notes.txt" in st, st)
        pasted = d.execute_async_script(r"""
            var done = arguments[arguments.length - 1];
            var c = document.createElement('canvas'); c.width = 16; c.height = 16;
            c.getContext('2d').fillRect(0, 0, 16, 16);
            c.toBlob(function (blob) {
              var dt = new DataTransfer();
              dt.items.add(new File([blob], 'pasted.png', {type: 'image/png'}));
              var ev = new ClipboardEvent('paste', {bubbles: true, cancelable: true, clipboardData: dt});
              document.getElementById('prompt').dispatchEvent(ev);
              done(ev.defaultPrevented);
            }, 'image/png');
        """)
        check("an image pasted into the message box is attached",
              pasted and wait(lambda: js("return document.querySelectorAll('#attachments img').length") == 3) is not None)
        d.find_element(By.CSS_SELECTOR, "#attachments li:last-child button").click()
        check("the remove button takes an attachment off",
              wait(lambda: js("return Array.prototype.map.call(document.querySelectorAll('#attachments img'),"
                              " function (i) { return i.alt; }).join()") == "img0.png,dropped.png", 3) is not None)
        posts0 = n_posts()
        set_field("max-tokens", 20)
        send("What is in these images?")
        s = wait_done()
        user_imgs = js("var u = document.querySelectorAll('#messages .msg.user'); return u[u.length-1].querySelectorAll('img').length;")
        check("the images go with the message (thumbnails in the turn, attachments cleared)",
              user_imgs == 2 and js("return document.querySelectorAll('#attachments img').length") == 0, user_imgs)
        lines = wait(lambda: last_log_line(posts0), 5) or []
        m = re.search(r"prompt=(\d+)", lines[0]) if lines else None
        check("the server took the request with both images (200, prompt expanded)",
              s and not s["error"] and m is not None and int(m.group(1)) > 60, (lines, s and s["error"]))

        # ---- stop: the browser aborts, the server ends the generation ----
        set_field("temperature", 0)
        set_field("max-tokens", 2000)
        posts0 = n_posts()
        m0 = metrics(base)
        gen0, prompt0 = m0.get("optiq_generated_tokens_total", 0), m0.get("optiq_prompt_tokens_total", 0)
        send("Count to one hundred")
        started = wait(lambda: (lambda s: s if s and len(s["answer"]) > 0 else None)(assistant_state()), 20)
        time.sleep(0.5)
        check("stop button is enabled while generating", d.find_element(By.ID, "stop").is_enabled())
        d.find_element(By.ID, "stop").click()
        t_stop = time.time()
        s = wait(lambda: (lambda s: s if s and not s["streaming"] and s["stats"] else None)(assistant_state()), 10)
        check("stop ends the reply in the page", started and s and "stopped" in s["stats"]
              and d.find_element(By.ID, "status").text == "Stopped.", s)
        # the server notices the closed connection at its next token; a full
        # greedy reply runs to the 512-token context (~480 tokens at 20 ms
        # each, ~10 s), stopped after ~0.5 s it has a few dozen
        mt = wait(lambda: (lambda m: m if m.get("optiq_active_generations") == 0 else None)(metrics(base)), 5, 0.02)
        t_idle = time.time() - t_stop
        gen = mt.get("optiq_generated_tokens_total", 0) - gen0 if mt else -1
        prompt = mt.get("optiq_prompt_tokens_total", 0) - prompt0 if mt else 0
        full = 512 - prompt
        check("the server ended the generation when the page stopped it (/metrics)",
              mt is not None and t_idle < 2 and 0 < gen < min(150, full // 2), (t_idle, gen, full))
        lines = wait(lambda: last_log_line(posts0), 5) or []
        check("the stopped request is in the server's log", len(lines) == 1 and " 200 " in lines[0], lines)
        check("Send is enabled again and Stop disabled", d.find_element(By.ID, "send").is_enabled()
              and not d.find_element(By.ID, "stop").is_enabled())

        # ---- the conversation survives a reload ----
        before = js("return Array.prototype.map.call(document.querySelectorAll('#messages .msg'), function (m) {"
                    " return m.className + '|' + m.textContent; });")
        d.refresh()
        wait(lambda: js("return document.querySelectorAll('#messages .msg').length") == len(before))
        after = js("return Array.prototype.map.call(document.querySelectorAll('#messages .msg'), function (m) {"
                   " return m.className + '|' + m.textContent; });")
        check("after a reload the conversation is back (8 turns, same text)", len(before) == 8 and after == before,
              (len(before), len(after)))
        check("after a reload the images are back", js(
            "var u = document.querySelectorAll('#messages .msg.user'); return u[2].querySelectorAll('img').length;") == 2)
        check("after a reload the settings are back", js("return document.getElementById('max-tokens').value") == "2000"
              and js("return document.getElementById('thinking').checked") is False)

        # ---- export ----
        for f in os.listdir(downloads):
            os.remove(os.path.join(downloads, f))
        d.find_element(By.ID, "export").click()
        path = wait(lambda: next((os.path.join(downloads, f) for f in os.listdir(downloads)
                                  if f.endswith(".json") and not f.endswith(".crdownload")), None), 10)
        doc = None
        if path:
            time.sleep(0.2)
            with open(path) as f:
                doc = json.load(f)
        msgs = doc["messages"] if doc else []
        check("Export JSON downloads the conversation", doc is not None and len(msgs) == 8
              and [m["role"] for m in msgs] == ["user", "assistant"] * 4 and msgs[0]["content"] == "Hello there"
              and doc["model"] == info["model"]["id"] and len(msgs[4]["images"]) == 2
              and msgs[4]["images"][0]["url"].startswith("data:image/png;base64,")
              and msgs[7]["stats"]["finish"] == "stopped", (path, doc and [(m["role"], m.get("stats")) for m in msgs]))

        d.save_screenshot(os.path.join(args.artifacts, "lab.png"))

        # ---- server tab (keyboard: arrow keys move between tabs) ----
        d.find_element(By.ID, "tab-chat").send_keys(Keys.ARROW_RIGHT)
        check("ArrowRight on the tabs selects the Server tab",
              wait(lambda: d.find_element(By.ID, "tab-server").get_attribute("aria-selected") == "true"
                   and d.find_element(By.ID, "panel-chat").get_attribute("hidden") is not None, 3) is not None)
        check("the focus follows to the Server tab", js("return document.activeElement.id") == "tab-server")
        mi = wait(lambda: (lambda t: t if "qwen3_5" in t else None)(d.find_element(By.ID, "model-info").text), 5)
        check("Server tab: the model and its architecture", mi and "Qwen3_5ForConditionalGeneration" in mi
              and "vision" in mi, mi)
        qi = d.find_element(By.ID, "quant-info").text
        bpw = "%.3f" % INSPECT["language"]["bits_per_weight"]
        check("Server tab: effective bits per weight", bpw in qi, qi)
        rows = js("return Array.prototype.map.call(document.querySelectorAll('#bits-table tbody tr'), function (r) {"
                  " return r.cells[0].textContent + ':' + r.cells[1].textContent; });")
        hist = INSPECT["quantization"]["histogram_bits_to_module_count"]
        check("Server tab: bits histogram", rows == [f"{b}:{hist[b]}" for b in sorted(hist, key=int)], rows)
        live = wait(lambda: (lambda t: t if "active requests" in t else None)(d.find_element(By.ID, "live-info").text), 5)
        check("Server tab: live counters from /metrics", live and re.search(r"requests\s+\d+ ok", live), live)
        si = d.find_element(By.ID, "server-info").text
        check("Server tab: server settings", "parallel generations" in si and "not required" in si, si)
        d.save_screenshot(os.path.join(args.artifacts, "lab-server.png"))

        # ---- a narrow window ----
        d.find_element(By.ID, "tab-chat").click()
        d.set_window_size(390, 844)
        time.sleep(0.5)
        lay = js("var s = document.getElementById('send').getBoundingClientRect();"
                 "var p = document.getElementById('prompt').getBoundingClientRect();"
                 "return {sw: document.documentElement.scrollWidth, iw: window.innerWidth, ih: window.innerHeight,"
                 " send: [s.left, s.right, s.top, s.bottom], prompt: [p.left, p.right],"
                 " cols: getComputedStyle(document.getElementById('panel-chat')).gridTemplateColumns};")
        check("narrow window: one column, no horizontal scrolling",
              lay["sw"] <= lay["iw"] and len(lay["cols"].split()) == 1, lay)
        check("narrow window: message box and Send button inside the screen",
              lay["send"][1] <= lay["iw"] and lay["send"][3] <= lay["ih"] and lay["prompt"][1] <= lay["iw"], lay)
        d.save_screenshot(os.path.join(args.artifacts, "lab-narrow.png"))

        # ---- no errors in the console (CSP violations would show here) ----
        logs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        check("no errors in the browser console", not logs, logs[:3])

        # ---- a server with an API key: the page loads, asks for the key, then works ----
        if args.key_url:
            kbase = args.key_url.rstrip("/")
            if kbase.endswith("/lab"):
                kbase = kbase[:-4]
            d.set_window_size(1280, 900)
            d.get(kbase + "/lab/")
            asked = wait(lambda: "API key" in d.find_element(By.ID, "model-badge").text, 10)
            check("with --api-key the page loads and asks for the key", asked is not None
                  and d.find_element(By.ID, "settings").get_attribute("open") is not None,
                  d.find_element(By.ID, "model-badge").text)
            key = d.find_element(By.ID, "api-key")
            key.send_keys(args.key)
            key.send_keys(Keys.TAB)
            got = wait(lambda: info["model"]["id"] in d.find_element(By.ID, "model-badge").text, 10)
            check("with the key entered the page reads /info", got is not None, d.find_element(By.ID, "model-badge").text)
            set_field("max-tokens", 8)
            send("Hi")
            s = wait_done()
            check("with the key a chat works", s and not s["error"] and "tokens" in s["stats"], s)
    finally:
        d.quit()


def main():
    global ROOT, INSPECT
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--inspect-json", required=True)
    ap.add_argument("--server-log", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--key-url", help="an optiq lab started with --api-key KEY")
    ap.add_argument("--key")
    args = ap.parse_args()
    ROOT = args.root
    with open(args.inspect_json) as f:
        INSPECT = json.load(f)
    base = args.url.rstrip("/")
    if base.endswith("/lab"):
        base = base[:-4]
    info = http_checks(base, args.model)
    if args.key_url:
        kb = args.key_url.rstrip("/")[:-4]
        st, _, _ = raw_request(kb, "GET", "/lab/")
        check("with --api-key the Lab's files need no key", st == 200, st)
        st, _, body = raw_request(kb, "GET", "/info")
        check("with --api-key GET /info without the key is a 401", st == 401, (st, body[:100]))
        st, _, _ = raw_request(kb, "GET", "/info", headers={"Authorization": "Bearer " + args.key})
        check("with --api-key GET /info with the key is a 200", st == 200, st)
    if not args.no_browser:
        try:
            browser_checks(base, args, info)
        except Exception as e:  # the driver failed: count it, do not hide it
            check("browser session", False, repr(e)[:500])
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
