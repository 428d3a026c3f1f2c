"""Model folders from the Hugging Face Hub, without huggingface_hub.

resolve_model(x) gives a local folder for x:
  - an existing directory: itself;
  - a repo id ("org/name"): the snapshot in the local Hugging Face cache
    (HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
    else ~/.cache/huggingface/hub; layout models--org--name/refs/<revision>
    holding the commit, snapshots/<commit>/<file>), else downloaded into that
    cache in the same layout huggingface_hub writes (blobs/<etag> and
    relative symlinks from the snapshot), so either tool finds the other's
    downloads.

Downloads use the hub's HTTP endpoints: GET {endpoint}/api/models/{repo}/revision/{revision}
for the commit and the file list, then GET {endpoint}/{repo}/resolve/{commit}/{file}
per file (redirects followed). endpoint: HF_ENDPOINT or https://huggingface.co;
HF_TOKEN (or token=) is sent as a bearer token to the endpoint's host only, never
to the storage host a redirect leads to. HF_HUB_OFFLINE=1 forbids downloads. Only
the files a model folder needs are fetched (MODEL_FILES).
"""
import fnmatch
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from .errors import OptiqError

DEFAULT_ENDPOINT = "https://huggingface.co"
# mlx-lm's allow_patterns, plus the vision sidecar and the image processor files
MODEL_FILES = [
    "*.json",
    "model*.safetensors",
    "optiq_vision.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jsonl",
    "*.jinja",
]
# a bf16 base for build_vision_sidecar: every weight file
BASE_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA = re.compile(r"^[0-9a-f]{40}$")


def cache_dir():
    """The Hugging Face hub cache folder of this environment."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "huggingface", "hub")


def is_repo_id(s):
    return bool(_REPO_ID.match(s)) and ".." not in s


def _repo_folder(repo_id):
    return os.path.join(cache_dir(), "models--" + repo_id.replace("/", "--"))


def cached_snapshot(repo_id, revision=None):
    """The cached snapshot folder of repo_id at revision (a branch, tag or commit), or None."""
    revision = revision or "main"
    folder = _repo_folder(repo_id)
    commit = revision if _SHA.match(revision) else None
    if commit is None:
        if ".." in revision.split("/"):
            return None
        try:
            with open(os.path.join(folder, "refs", *revision.split("/"))) as f:
                commit = f.read().strip()
        except OSError:
            return None
    snap = os.path.join(folder, "snapshots", commit)
    return snap if os.path.isfile(os.path.join(snap, "config.json")) else None


def resolve_model(path_or_repo_id, revision=None, token=None, allow_patterns=None):
    """A local folder for a path or a repo id (see the module comment)."""
    p = os.fspath(path_or_repo_id)
    if os.path.isdir(p):
        return p
    if not is_repo_id(p):
        raise OptiqError("%s: no such folder, and not a Hugging Face repo id (org/name)" % p, status=1)
    if revision is not None and (not revision or revision.startswith("/") or ".." in revision.split("/")):
        raise OptiqError("revision %r: expected a branch, tag or commit" % revision, status=3)
    snap = cached_snapshot(p, revision)
    if snap:
        return snap
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise OptiqError("%s: not in the Hugging Face cache %s and HF_HUB_OFFLINE is set" % (p, cache_dir()), status=1)
    return download(p, revision=revision, token=token, allow_patterns=allow_patterns or MODEL_FILES)


# ---- HTTP ----


def _endpoint():
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, keeping the bearer token only on the endpoint's own host,
    and remembers the first response's X-Linked-Etag / ETag (the blob name)."""

    def __init__(self, host, auth):
        self.host, self.auth = host, auth
        self.first_etag = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if self.first_etag is None:
            self.first_etag = headers.get("X-Linked-Etag") or headers.get("ETag")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and self.auth and urllib.parse.urlsplit(newurl).netloc == self.host:
            new.add_unredirected_header("Authorization", self.auth)
        return new


def _open(url, token, timeout=60):
    tok = token or os.environ.get("HF_TOKEN") or None
    auth = "Bearer " + tok if tok else None
    host = urllib.parse.urlsplit(_endpoint()).netloc
    handler = _Redirects(host, auth)
    opener = urllib.request.build_opener(handler)
    req = urllib.request.Request(url, headers={"User-Agent": "optiq-python"})
    if auth and urllib.parse.urlsplit(url).netloc == host:
        req.add_unredirected_header("Authorization", auth)
    try:
        r = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        hint = " (set HF_TOKEN for a private or gated repo)" if e.code in (401, 403, 404) else ""
        raise OptiqError("%s: HTTP %d %s%s" % (url, e.code, e.reason, hint), status=1) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise OptiqError("%s: %s" % (url, getattr(e, "reason", e)), status=1) from None
    return r, handler.first_etag


def _clean_etag(etag):
    if not etag:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    etag = etag.strip('"')
    return etag if re.match(r"^[A-Za-z0-9._-]{1,128}$", etag) else None


def download(repo_id, revision=None, token=None, allow_patterns=MODEL_FILES):
    """Download the files of repo_id matching allow_patterns into the cache; the snapshot folder."""
    revision = revision or "main"
    ep = _endpoint()
    quote = urllib.parse.quote
    r, _ = _open("%s/api/models/%s/revision/%s" % (ep, repo_id, quote(revision, safe="")), token)
    with r:
        try:
            info = json.loads(r.read().decode("utf-8"))
        except ValueError:
            raise OptiqError("%s: the hub's answer about revision %s is not JSON" % (repo_id, revision), status=2) from None
    commit = info.get("sha") if isinstance(info, dict) else None
    if not isinstance(commit, str) or not _SHA.match(commit):
        raise OptiqError("%s: the hub's answer has no commit sha for revision %s" % (repo_id, revision), status=2)
    names = []
    for s in info.get("siblings") or []:
        name = s.get("rfilename") if isinstance(s, dict) else None
        if not isinstance(name, str) or name.startswith("/") or ".." in name.split("/"):
            continue
        if any(fnmatch.fnmatch(name, pat) for pat in allow_patterns):
            names.append(name)
    if "config.json" not in names:
        raise OptiqError("%s@%s: no config.json in the repository: not a model folder" % (repo_id, revision), status=2)
    # config.json last: a snapshot holding it is complete (cached_snapshot's test)
    names.sort(key=lambda n: n == "config.json")
    folder = _repo_folder(repo_id)
    blobs = os.path.join(folder, "blobs")
    snap = os.path.join(folder, "snapshots", commit)
    os.makedirs(blobs, exist_ok=True)
    os.makedirs(snap, exist_ok=True)
    for name in names:
        target = os.path.join(snap, *name.split("/"))
        if os.path.exists(target):
            continue
        url = "%s/%s/resolve/%s/%s" % (ep, repo_id, commit, quote(name))
        r, first_etag = _open(url, token, timeout=120)
        fd, tmp = tempfile.mkstemp(dir=blobs, suffix=".incomplete")
        h = hashlib.sha256()
        try:
            with r, os.fdopen(fd, "wb") as out:
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
                etag = _clean_etag(first_etag or r.headers.get("X-Linked-Etag") or r.headers.get("ETag"))
        except BaseException:
            os.unlink(tmp)
            raise
        blob = os.path.join(blobs, etag or h.hexdigest())
        os.replace(tmp, blob)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.symlink(os.path.relpath(blob, os.path.dirname(target)), target)
        except OSError:
            shutil.copyfile(blob, target)  # file systems without symlinks
    if not _SHA.match(revision):
        ref = os.path.join(folder, "refs", *revision.split("/"))
        os.makedirs(os.path.dirname(ref), exist_ok=True)
        with open(ref, "w") as f:
            f.write(commit)
    return snap
