"""`python -m optiq ...` runs the optiq command bundled with the package."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from conftest import QWEN_TEXT, QWEN_VL, cli_path, run_cli


def py_optiq(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "optiq"] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120, env=env, **kw)


def test_forwards_arguments_and_exit_status():
    r = py_optiq("--version")
    assert r.returncode == 0 and r.stdout == run_cli("--version").stdout
    r = py_optiq("generate", "--model", QWEN_VL, "--prompt", "Hello", "--max-tokens", "6", "--json")
    ref = run_cli("generate", "--model", QWEN_VL, "--prompt", "Hello", "--max-tokens", "6", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["tokens"] == json.loads(ref.stdout)["tokens"]
    bad = py_optiq("generate", "--model", "/no/such/model", "--prompt", "x")
    ref = run_cli("generate", "--model", "/no/such/model", "--prompt", "x", check=False)
    assert bad.returncode == ref.returncode != 0 and bad.stderr == ref.stderr


def test_missing_command_is_a_clear_error():
    env = dict(os.environ, OPTIQ_CLI="/no/such/optiq")
    r = py_optiq("--version", env=env)
    assert r.returncode == 127 and "OPTIQ_CLI=/no/such/optiq" in r.stderr


def test_library_and_command_are_bundled_or_overridden():
    from optiq import _native

    env = {k: v for k, v in os.environ.items() if k not in ("OPTIQ_LIB", "OPTIQ_CLI")}
    code = "from optiq import _native; print(_native.library_path()); print(_native.cli_path())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
    pkg = os.path.dirname(_native.__file__)
    assert out == [os.path.join(pkg, "_lib", "liboptiq.so"), os.path.join(pkg, "_lib", "optiq")]
    lib = os.path.join(os.path.dirname(cli_path()), "liboptiq.so")
    env["OPTIQ_LIB"] = lib
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out[0] == lib
    env["OPTIQ_LIB"] = "/no/such/liboptiq.so"
    r = subprocess.run([sys.executable, "-c", "import optiq; optiq.Engine.load(%r)" % QWEN_TEXT], capture_output=True,
                       text=True, env=env)
    assert r.returncode != 0 and "OPTIQ_LIB=/no/such/liboptiq.so" in r.stderr


def test_serve(qwen_text):
    p = subprocess.Popen([sys.executable, "-m", "optiq", "serve", "--model", QWEN_TEXT, "--port", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.time() + 30
        while port is None and time.time() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            m = re.search(r"listening on http://[^ ]*:(\d+)", line)
            port = m and m.group(1)
        assert port, "optiq serve did not start"
        base = "http://127.0.0.1:%s" % port
        with urllib.request.urlopen(base + "/health", timeout=10) as r:
            assert r.status == 200
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0}
        req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            reply = json.loads(r.read())
        mine = qwen_text.chat("Hi", max_tokens=8)
        assert reply["choices"][0]["message"]["content"] == mine.text
        assert reply["usage"]["completion_tokens"] == len(mine.tokens)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
