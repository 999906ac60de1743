"""A thin, lazily imported wrapper of the kaggle 2.x Python API with one clear message per failure.

`import kaggle` authenticates at import time (and prints help text when it cannot), so nothing here imports
it before `KaggleClient()` is built, and credentials are looked for first, without it, so that a missing
token gives one message naming every place the client looks. Keys are never logged or returned: the
credential description says where a key came from, never what it is, and whatever the library prints is
captured, stripped of any secret, and logged at debug level.

Local testing: kaggle 2.2.5 ignores `KAGGLE_API_ENVIRONMENT=TEST`; with `KAGGLE_API_ENVIRONMENT=LOCALHOST`
it talks to `http://localhost/api/v1/...`, and `http_proxy=http://127.0.0.1:PORT` routes that to
`pipeline.testing.fake_kaggle` on any port (see docs/KAGGLE.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PAGE_SIZE = 200  # files per ListDataFiles page asked for; the server may return fewer
MAX_PAGES = 10_000  # bound on paging loops (2M files, far beyond any competition)


class KaggleError(RuntimeError):
    """A Kaggle operation that failed; the message says what to do and never holds a key."""


class CredentialsError(KaggleError):
    """No usable credentials, or Kaggle rejected them."""


@dataclass(frozen=True)
class Credentials:
    """Where the client will take its credentials from (never the secret itself)."""

    kind: str  # "access token", "API key" or "OAuth login"
    source: str  # the env var(s) or file it came from
    username: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int  # bytes, as the API lists them


@dataclass(frozen=True)
class RemoteSubmission:
    ref: int
    file_name: str
    date: datetime | None
    description: str
    status: str  # PENDING, COMPLETE or ERROR
    public_score: float | None
    private_score: float | None
    error: str


def config_dir(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """The folder the kaggle client reads `kaggle.json` from, resolved exactly as kaggle 2.2.5 does."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    legacy = home / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"


def credential_places(env: Mapping[str, str] | None = None, home: Path | None = None) -> list[str]:
    """Every place the client looks for credentials, in the order it looks."""
    home = Path.home() if home is None else home
    return [
        "KAGGLE_API_TOKEN (an access token, or the path of a file holding one)",
        f"{home / '.kaggle' / 'access_token'} (an access token from https://www.kaggle.com/settings/api)",
        f"{config_dir(env, home) / 'kaggle.json'} (legacy API key file; its folder is KAGGLE_CONFIG_DIR when set, "
        + "else ~/.kaggle, else $XDG_CONFIG_HOME/kaggle)",
        "KAGGLE_USERNAME and KAGGLE_KEY (legacy API key in environment variables)",
        f"{home / '.kaggle' / 'credentials.json'} (written by `kaggle auth login`)",
    ]


def _warn_if_readable(path: Path) -> None:
    if os.name != "nt" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s is readable by other users of this machine; run: chmod 600 %s", path, path)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _kaggle_json(env: Mapping[str, str], home: Path) -> tuple[Path, dict[str, Any]]:
    path = config_dir(env, home) / "kaggle.json"
    if not path.is_file():
        return path, {}
    _warn_if_readable(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s is not valid JSON (%s); ignoring it", path, type(err).__name__)
        return path, {}
    return path, data if isinstance(data, dict) else {}


def find_credentials(env: Mapping[str, str] | None = None, home: Path | None = None) -> Credentials | None:
    """Find credentials in the order kaggle 2.2.5 tries them, without importing it. Warns on an exposed file."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    token = env.get("KAGGLE_API_TOKEN")
    if token:
        if Path(token).is_file():
            _warn_if_readable(Path(token))
            if _read_text(Path(token)):
                return Credentials("access token", f"the file named by KAGGLE_API_TOKEN ({token})")
        else:
            return Credentials("access token", "KAGGLE_API_TOKEN")
    for name in ("access_token", "access_token.txt"):
        path = home / ".kaggle" / name
        if path.is_file() and _read_text(path):
            _warn_if_readable(path)
            return Credentials("access token", str(path))
    path, data = _kaggle_json(env, home)
    user = env.get("KAGGLE_USERNAME") or data.get("username")
    key = env.get("KAGGLE_KEY") or data.get("key")
    if user and key:
        if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
            source = "KAGGLE_USERNAME/KAGGLE_KEY"
        elif env.get("KAGGLE_USERNAME") or env.get("KAGGLE_KEY"):
            source = f"KAGGLE_USERNAME/KAGGLE_KEY and {path}"
        else:
            source = str(path)
        return Credentials("API key", source, str(user))
    oauth = home / ".kaggle" / "credentials.json"
    if oauth.is_file():
        _warn_if_readable(oauth)
        return Credentials("OAuth login", str(oauth))
    return None


def require_credentials(env: Mapping[str, str] | None = None, home: Path | None = None) -> Credentials:
    """`find_credentials`, or a CredentialsError listing every place looked at."""
    found = find_credentials(env, home)
    if found is None:
        places = "\n".join(f"  - {p}" for p in credential_places(env, home))
        raise CredentialsError(
            "no Kaggle credentials found. The kaggle client looks, in this order, at:\n"
            f"{places}\n"
            "Create a token at https://www.kaggle.com/settings/api and put it in one of these places."
        )
    return found


def _secrets(env: Mapping[str, str], home: Path) -> list[str]:
    """Every credential value in reach, to strip from anything the library prints."""
    values = [env.get("KAGGLE_API_TOKEN", ""), env.get("KAGGLE_KEY", "")]
    for path in (home / ".kaggle" / "access_token", home / ".kaggle" / "access_token.txt"):
        values.append(_read_text(path) or "")
    token = env.get("KAGGLE_API_TOKEN")
    if token and Path(token).is_file():
        values.append(_read_text(Path(token)) or "")
    values.append(str(_kaggle_json(env, home)[1].get("key") or ""))
    return [v for v in values if len(v) >= 4]


def endpoint_description(env: Mapping[str, str] | None = None) -> str:
    """Where the client's requests go, for error messages."""
    env = os.environ if env is None else env
    if env.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST":
        proxy = env.get("http_proxy") or env.get("HTTP_PROXY")
        return "http://localhost" + (f" (through the proxy {proxy})" if proxy else "")
    return "https://api.kaggle.com"


def _http_message(code: int | None, what: str, slug: str | None, creds: Credentials, detail: str) -> str:
    comp = f"competition '{slug}'" if slug else "Kaggle"
    if code == 401:
        return (
            f"Kaggle rejected the {creds.kind} from {creds.source} (401 Unauthorized) while trying to {what}; "
            "create a new token at https://www.kaggle.com/settings/api"
        )
    if code == 403:
        rules = f"https://www.kaggle.com/competitions/{slug}/rules" if slug else "the competition's rules page"
        return (
            f"Kaggle refused to {what} for {comp} (403 Forbidden): join the competition and accept its rules at "
            f"{rules} with the account whose {creds.kind} is in {creds.source}, then retry"
        )
    if code == 404:
        return (
            f"Kaggle has no {comp} (404 Not Found) while trying to {what}; check the slug under `kaggle:` in "
            "params.yaml (it is the last part of the competition's URL)"
        )
    if code == 429:
        return f"Kaggle is rate limiting requests (429) while trying to {what}; wait a while and retry"
    return f"Kaggle answered {code} while trying to {what} for {comp}: {detail}"


class KaggleClient:
    """The kaggle 2.x API, imported and authenticated on construction, with errors turned into KaggleError."""

    def __init__(self) -> None:
        self._env = dict(os.environ)  # the library reads os.environ itself, at import time
        self._home = Path.home()
        self.credentials = require_credentials(self._env, self._home)
        self._secret_values = _secrets(self._env, self._home)
        log.info("Kaggle credentials: %s from %s", self.credentials.kind, self.credentials.source)
        with self._errors("authenticate", None):
            import kaggle  # noqa: F401  (authenticates at import time; only its side effects are wanted here)
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            # VERBOSE=1 makes the library print request headers, basic-auth header included: never allow it here.
            api.args = [a for a in api.args if a not in ("--verbose", "-v")]
            try:
                api.authenticate()
            except SystemExit:
                raise CredentialsError(
                    f"Kaggle did not accept the {self.credentials.kind} from {self.credentials.source}; "
                    "create a new token at https://www.kaggle.com/settings/api"
                ) from None
        self._api = api

    def _redact(self, text: str) -> str:
        for secret in self._secret_values:
            text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def _errors(self, what: str, slug: str | None) -> Iterator[None]:
        """Capture what the library prints and turn its exceptions into one KaggleError line."""
        import requests
        import urllib3

        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                yield
        except KaggleError:
            raise
        except requests.HTTPError as err:
            code = err.response.status_code if err.response is not None else None
            raise KaggleError(_http_message(code, what, slug, self.credentials, self._redact(str(err)))) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
            # Connection refused, DNS, timeouts, and transfers cut short (after the library's own retries).
            raise KaggleError(
                f"network failure while trying to {what}: cannot reach {endpoint_description(self._env)} "
                f"({type(err).__name__}); check the connection and retry (a partial download resumes)"
            ) from None
        except (OSError, ValueError, RuntimeError) as err:
            # ValueError: the library's own checks (e.g. a download shorter than its Content-Length).
            raise KaggleError(f"could not {what}: {self._redact(str(err))}") from None
        finally:
            for line in out.getvalue().splitlines():
                if line.strip():
                    log.debug("kaggle: %s", self._redact(line))

    def _list(self, slug: str, max_pages: int, page_size: int = PAGE_SIZE) -> tuple[list[RemoteFile], bool]:
        files: list[RemoteFile] = []
        token: str | None = None
        with self._errors("list the data files", slug):
            for _ in range(max_pages):
                resp = self._api.competition_list_files(slug, page_token=token, page_size=page_size)
                files += [RemoteFile(f.name or f.ref, int(f.total_bytes or 0)) for f in resp.files]
                token = resp.next_page_token
                if not token:
                    return files, True
        return files, False

    def list_files(self, slug: str) -> list[RemoteFile]:
        """The competition's data files with their sizes, all pages."""
        return self._list(slug, MAX_PAGES)[0]

    def archive_size(self, slug: str) -> int | None:
        """Size of the archive the competition's download serves (its Content-Length), without fetching it."""
        from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFilesRequest

        with self._errors("look up the download size", slug), self._api.build_kaggle_client() as kc:
            request = ApiDownloadDataFilesRequest()
            request.competition_name = slug
            response = kc.competitions.competition_api_client.download_data_files(request)  # streamed: body unread
            try:
                return int(response.headers.get("Content-Length") or 0) or None
            finally:
                response.close()

    def total_bytes(self, slug: str, max_pages: int = 25, page_size: int = PAGE_SIZE) -> int:
        """Bytes the competition's files take: their listed sizes, or, when the listing runs past `max_pages`
        (the real HW2P2 lists hundreds of thousands of images), the size of the download archive."""
        files, complete = self._list(slug, max_pages, page_size)
        listed = sum(f.size for f in files)
        log.info("%s: %d%s files, %.1f MB listed", slug, len(files), "" if complete else "+", listed / 1e6)
        if complete:
            return listed
        return max(listed, self.archive_size(slug) or 0)

    def download(self, slug: str, folder: Path) -> Path:
        """Download the competition's files as one archive into `folder` (resuming a partial one); its path."""
        folder.mkdir(parents=True, exist_ok=True)
        with self._errors("download the data", slug):
            # force=False: an interrupted archive left by an earlier run is resumed, not fetched again.
            self._api.competition_download_files(slug, path=str(folder), force=False, quiet=not sys.stderr.isatty())
        found = sorted(
            (p for p in folder.iterdir() if p.name.startswith(f"{slug}.") and not p.name.endswith(".kaggle-partial")),
            key=lambda p: p.stat().st_mtime,
        )
        if not found:
            raise KaggleError(f"the kaggle client reported success but wrote no archive for '{slug}' in {folder}")
        return found[-1]

    def submit(self, path: Path, slug: str, message: str) -> int:
        """Upload `path` as a submission to `slug`; Kaggle's reference of the new submission."""
        with self._errors("submit", slug):
            resp = self._api.competition_submit(str(path), message, slug, quiet=True)
        if resp.message == self._api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE or not resp.ref:
            raise KaggleError(f"uploading {path} to '{slug}' failed ({resp.message or 'no reference returned'})")
        log.debug("submitted %s to %s: %s (ref %s)", path, slug, resp.message, resp.ref)
        return int(resp.ref)

    def submissions(self, slug: str, page_size: int = 100, max_pages: int = 50) -> list[RemoteSubmission]:
        """The user's submissions to `slug`, newest first, with their public and private scores."""
        out: list[RemoteSubmission] = []
        with self._errors("list your submissions", slug):
            for page in range(1, max_pages + 1):
                batch = self._api.competition_submissions(slug, page_number=page, page_size=page_size) or []
                out += [_submission(s) for s in batch if s is not None]
                if len(batch) < page_size:
                    break
        return out


def _score(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _submission(s: Any) -> RemoteSubmission:
    return RemoteSubmission(
        ref=int(s.ref),
        file_name=s.file_name or "",
        date=s.date,
        description=s.description or "",
        status=getattr(s.status, "name", str(s.status)),
        public_score=_score(s.public_score),
        private_score=_score(s.private_score),
        error=s.error_description or "",
    )
