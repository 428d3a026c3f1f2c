"""Shared fixtures of the Python package's tests.

The reference for every generation is the optiq command of the same build
(OPTIQ_TEST_CLI, set by tests/test_python.sh to $BUILD/optiq): the binding
must give, token for token, what `optiq generate --json` gives for the same
inputs. The model folders are the repository's tiny fixtures.
"""
import functools
import http.server
import json
import os
import subprocess
import threading

import pytest

ROOT = os.environ.get("OPTIQ_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
QWEN_VL = os.path.join(MODELS, "qwen35-vl-mixed")
QWEN_BASE = os.path.join(MODELS, "qwen35-vl-base")
QWEN_TEXT = os.path.join(MODELS, "qwen35-dense-mixed")
GEMMA_VL = os.path.join(MODELS, "gemma4-vl-mixed")
GEMMA_TEXT = os.path.join(MODELS, "gemma4-e2b-mixed")
IMAGES = os.path.join(QWEN_VL, "images")


def cli_path():
    p = os.environ.get("OPTIQ_TEST_CLI") or os.path.join(ROOT, "build", "optiq")
    if not os.access(p, os.X_OK):
        pytest.exit("the optiq command %s is missing: set OPTIQ_TEST_CLI (tests/test_python.sh does)" % p, 2)
    return p


def run_cli(*args, check=True, env=None):
    r = subprocess.run([cli_path()] + [str(a) for a in args], capture_output=True, text=True, timeout=120, env=env)
    if check and r.returncode != 0:
        raise AssertionError("optiq %s failed (%d): %s" % (" ".join(map(str, args)), r.returncode, r.stderr))
    return r


def cli_generate(model, prompt, *args):
    """`optiq generate --json` for the same inputs: its parsed JSON object."""
    r = run_cli("generate", "--model", model, "--prompt", prompt, "--json", *args)
    return json.loads(r.stdout)


def assert_same(result, ref):
    """A GenerationResult equals `optiq generate --json`'s object (all but timings)."""
    assert result.tokens == ref["tokens"]
    assert result.text == ref["text"]
    assert result.reasoning == ref["reasoning"]
    assert result.finish_reason == ref["finish_reason"]
    assert result.prompt_tokens == ref["prompt_tokens"]


@pytest.fixture(scope="session")
def optiq_mod():
    import optiq

    return optiq


@functools.lru_cache(maxsize=None)
def _engine(path):
    import optiq

    return optiq.Engine.load(path)


@pytest.fixture(scope="session")
def qwen():
    return _engine(QWEN_VL)


@pytest.fixture(scope="session")
def gemma():
    return _engine(GEMMA_VL)


@pytest.fixture(scope="session")
def qwen_text():
    return _engine(QWEN_TEXT)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture(scope="session")
def image_server():
    """http://127.0.0.1:PORT serving the fixture images (the http-URL cases)."""
    handler = functools.partial(_Quiet, directory=IMAGES)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()
