"""Loading by Hugging Face repo id: the local cache layout and downloads,
against a local HTTP server that answers like the hub's endpoints
(/api/models/{repo}/revision/{rev}, /{repo}/resolve/{commit}/{file}, with
LFS files redirected to a storage host path). No internet is used."""
import hashlib
import http.server
import json
import os
import threading

import pytest

from conftest import GEMMA_TEXT, assert_same, cli_generate

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_secret_token"


class Hub:
    def __init__(self):
        self.files = {}
        for name in sorted(os.listdir(GEMMA_TEXT)):
            p = os.path.join(GEMMA_TEXT, name)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    self.files[name] = f.read()
        self.files["README.md"] = b"# model card\n"
        self.files["junk.bin"] = b"\0" * 100
        self.repos = {"test-org/tiny-gemma": False, "test-org/private": True}  # id -> needs the token
        self.requests = []  # (path, Authorization header or None)


def make_handler(hub):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, code, body=b"", headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            auth = self.headers.get("Authorization")
            hub.requests.append((self.path, auth))
            parts = self.path.split("/")
            if self.path.startswith("/cdn/"):
                name = self.path[len("/cdn/"):]
                return self.send(200, hub.files[name]) if name in hub.files else self.send(404)
            if self.path.startswith("/api/models/"):
                repo, rev = "/".join(parts[3:5]), "/".join(parts[6:])
                if parts[5:6] != ["revision"] or repo not in hub.repos:
                    return self.send(404, b'{"error": "Repository not found"}')
                if hub.repos[repo] and auth != "Bearer " + TOKEN:
                    return self.send(401, b'{"error": "Invalid credentials"}')
                if rev not in ("main", SHA):
                    return self.send(404, b'{"error": "Revision not found"}')
                body = {"id": repo, "sha": SHA, "siblings": [{"rfilename": n} for n in hub.files]}
                return self.send(200, json.dumps(body).encode(), [("Content-Type", "application/json")])
            repo = "/".join(parts[1:3])
            if repo in hub.repos and parts[3:5] == ["resolve", SHA] and len(parts) == 6:
                if hub.repos[repo] and auth != "Bearer " + TOKEN:
                    return self.send(401)
                name = parts[5]
                if name not in hub.files:
                    return self.send(404)
                data = hub.files[name]
                if name.endswith(".safetensors"):  # LFS: redirected to storage, the sha256 as linked etag
                    etag = '"%s"' % hashlib.sha256(data).hexdigest()
                    # another host name for the same server: the storage host, which must not see the token
                    cdn = "http://localhost:%d/cdn/" % self.server.server_address[1]
                    return self.send(302, b"", [("Location", cdn + name), ("X-Linked-Etag", etag)])
                etag = '"%s"' % hashlib.sha1(data).hexdigest()
                return self.send(200, data, [("ETag", etag)])
            return self.send(404)

    return Handler


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    h = Hub()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(h))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:%d" % srv.server_address[1])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield h
    srv.shutdown()
    srv.server_close()


def test_download_into_the_cache_layout(hub, tmp_path, monkeypatch, optiq_mod):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    eng = optiq_mod.Engine.load("test-org/tiny-gemma")
    repo = tmp_path / "hub" / "models--test-org--tiny-gemma"
    assert eng.path == str(repo / "snapshots" / SHA)
    assert (repo / "refs" / "main").read_text() == SHA
    snap = repo / "snapshots" / SHA
    got = sorted(os.listdir(snap))
    assert got == sorted(n for n in hub.files if n not in ("README.md", "junk.bin", "reference.safetensors"))
    for name in got:
        link = snap / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.read_bytes() == hub.files[name]
    st = snap / "model.safetensors"
    assert os.path.basename(os.path.realpath(st)) == hashlib.sha256(hub.files["model.safetensors"]).hexdigest()
    cfg = snap / "config.json"
    assert os.path.basename(os.path.realpath(cfg)) == hashlib.sha1(hub.files["config.json"]).hexdigest()
    assert not [p for p in os.listdir(repo / "blobs") if p.endswith(".incomplete")]
    resolves = [p.rsplit("/", 1)[1] for p, _ in hub.requests if "/resolve/" in p]
    assert resolves[-1] == "config.json"  # last: a snapshot holding it is complete
    # the token went to the hub's endpoints and never to the storage redirect
    assert all(a == "Bearer " + TOKEN for p, a in hub.requests if not p.startswith("/cdn/"))
    assert [a for p, a in hub.requests if p.startswith("/cdn/")] == [None]
    # the downloaded folder generates as the fixture does
    assert_same(eng.generate("Hello", max_tokens=8), cli_generate(GEMMA_TEXT, "Hello", "--max-tokens", "8"))


def test_cached_snapshot_needs_no_network(hub, monkeypatch, optiq_mod):
    first = optiq_mod.Engine.load("test-org/tiny-gemma").path
    n = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert optiq_mod.Engine.load("test-org/tiny-gemma").path == first
    assert optiq_mod.Engine.load("test-org/tiny-gemma", revision=SHA).path == first
    assert len(hub.requests) == n
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert optiq_mod.Engine.load("test-org/tiny-gemma").path == first
    assert len(hub.requests) == n  # found in the cache: not asked again


def test_private_repo_needs_the_token(hub, monkeypatch, optiq_mod):
    with pytest.raises(optiq_mod.OptiqError) as e:
        optiq_mod.Engine.load("test-org/private")
    assert "401" in str(e.value) and "HF_TOKEN" in str(e.value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert optiq_mod.Engine.load("test-org/private").model_type.startswith("gemma4")


def test_missing_repo_revision_and_offline(hub, monkeypatch, optiq_mod):
    with pytest.raises(optiq_mod.OptiqError) as e:
        optiq_mod.Engine.load("test-org/nothing-here")
    assert "404" in str(e.value)
    with pytest.raises(optiq_mod.OptiqError) as e:
        optiq_mod.Engine.load("test-org/tiny-gemma", revision="no-such-branch")
    assert "404" in str(e.value)
    with pytest.raises(optiq_mod.OptiqError) as e:
        optiq_mod.Engine.load("test-org/tiny-gemma", revision="../../escape")
    assert "revision" in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(optiq_mod.OptiqError) as e:
        optiq_mod.Engine.load("test-org/tiny-gemma")
    assert "HF_HUB_OFFLINE" in str(e.value)
    with pytest.raises(optiq_mod.OptiqError) as e:
        optiq_mod.Engine.load("not a repo id")
    assert "not a Hugging Face repo id" in str(e.value)


def test_cache_folder_follows_the_environment(monkeypatch):
    from optiq import hub as h

    monkeypatch.setenv("HF_HUB_CACHE", "/a/hub-cache")
    monkeypatch.setenv("HF_HOME", "/b/home")
    assert h.cache_dir() == "/a/hub-cache"
    monkeypatch.delenv("HF_HUB_CACHE")
    assert h.cache_dir() == os.path.join("/b/home", "hub")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", "/c/xdg")
    assert h.cache_dir() == os.path.join("/c/xdg", "huggingface", "hub")
