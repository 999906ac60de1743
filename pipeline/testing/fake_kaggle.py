"""A local Kaggle on 127.0.0.1 that serves what the real kaggle 2.x client calls for, for tests and dry runs.

    python -m pipeline.testing.fake_kaggle --project . --lifetime 0     # this project's data/raw + data/solution
    python -m pipeline.testing.fake_kaggle --competition /tmp/comp --solution /tmp/sol --port 7777   # any HW2P2 layout
    python -m pipeline.testing.fake_kaggle --render /tmp/tiny         # a tiny rendered competition (40 trials)

then, in another shell (kaggle 2.2.5 ignores KAGGLE_API_ENVIRONMENT=TEST, so reach it through LOCALHOST and a
plain HTTP proxy, on any port):

    export KAGGLE_API_ENVIRONMENT=LOCALHOST http_proxy=http://127.0.0.1:7777 no_proxy= \
           KAGGLE_USERNAME=me KAGGLE_KEY=anything
    kaggle competitions files 11-785-s19-hw2p2-classification

Routes (read from kaggle 2.2.5 / kagglesdk 0.1.38; every RPC is `POST /api/v1/<service>/<method>` with a JSON
body, parsed and answered with kagglesdk's own types so the payloads match the client exactly):

    competitions.CompetitionApiService/ListDataFiles           file listing with sizes, paged by pageToken
    competitions.CompetitionApiService/DownloadDataFiles       302 to GET /files/<slug>.zip (whole competition)
    competitions.CompetitionApiService/DownloadDataFile        302 to GET /files/<slug>/<path> (one file)
    competitions.CompetitionApiService/StartSubmissionUpload   {token, createUrl}; the client PUTs the file there
    competitions.CompetitionApiService/CreateSubmission        scores the upload now, returns {message, ref}
    competitions.CompetitionApiService/ListSubmissions         the user's submissions with public/private scores
    competitions.CompetitionApiService/GetSubmission           one submission (`kaggle competitions submit --wait`)
    competitions.CompetitionApiService/GetSubmissionLimits     counts for the "submissions remaining" line
    competitions.CompetitionApiService/GetLeaderboard          each team's best public score, highest first
    security.OAuthService/IntrospectToken                      accepts any access token (KAGGLE_API_TOKEN)

Downloads honour `Range` (206) with a stable ETag, so the client's resume works. Each upload is scored with
`pipeline.submission` against the solution files: a fixed, seeded `public_fraction` of the rows is public,
the rest private (`public_mask`). Any credentials are accepted unless the server is told otherwise; slugs not
configured get 404, slugs whose rules were "not accepted" get 403. A submission that cannot be scored is
ERROR with its reason in `errorDescription` (`kaggle competitions submission REF` and `submit --wait` print it).

The command-line server stops by itself after `--lifetime` seconds (an hour by default, so a forgotten one
does not linger) and logs why; `--lifetime 0` serves until Ctrl-C. `--project DIR` serves DIR/data/raw with
DIR/data/solution and DIR/params.yaml: the competition `make repro` rendered, so its submissions fit and score.
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import hashlib
import http.server
import json
import logging
import posixpath
import shutil
import signal
import sys
import tempfile
import threading
import urllib.parse
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import numpy as np

from pipeline import paths
from pipeline.params import KaggleParams, LayoutParams, SubmissionParams, load_params

log = logging.getLogger(__name__)

CLASSIFICATION, VERIFICATION = "classification", "verification"
CLASSIFICATION_ENTRIES = ("train_dir", "val_classification_dir", "test_classification_dir", "test_order")
VERIFICATION_ENTRIES = ("val_verification_dir", "val_trials", "test_verification_dir", "test_trials")
SOLUTION_FILES = {CLASSIFICATION: "classification_solution.csv", VERIFICATION: "verification_solution.csv"}
_FIXED_ZIP_TIME = (2019, 2, 1, 0, 0, 0)  # entry dates fixed so the archive (and its ETag) is reproducible
_STALL_LIMIT_S = 120.0  # a stalled download gives up after this long even if nobody releases it


TINY = {  # a competition small enough to render, zip and train on in seconds
    "identities": 6,
    "large_identities": 2,
    "train_images": 4,
    "val_images": 2,
    "test_images": 2,
    "val_verification_identities": 4,
    "test_verification_identities": 4,
    "verification_images": 4,
    "val_trials": 40,
    "test_trials": 40,
}


def render_tiny(folder: str | Path, layout: LayoutParams | None = None, seed: int = 0) -> tuple[Path, Path]:
    """Render a tiny synthetic competition into `folder`/competition and its answers into `folder`/solution."""
    from pipeline.params import SyntheticParams
    from pipeline.sources.synthetic import render_competition

    folder = Path(folder)
    comp, sol = folder / "competition", folder / "solution"
    render_competition(comp, sol, SyntheticParams(**TINY), layout or LayoutParams(), seed)
    return comp, sol


def isolated_env(home: str | Path, server: FakeKaggle | None = None, base: dict[str, str] | None = None) -> dict:
    """A copy of the environment for a kaggle client process that never sees the user's real credentials.

    HOME, KAGGLE_CONFIG_DIR and XDG_CONFIG_HOME point into `home`, every KAGGLE_* variable is dropped, and
    with a `server` the client is routed to it. Add credentials (KAGGLE_USERNAME/KAGGLE_KEY ...) yourself.
    """
    import os

    home = Path(home)
    (home / "kaggle-config").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.upper().startswith("KAGGLE_")}
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "VERBOSE"):
        env.pop(k, None)
    env.update(
        HOME=str(home),
        KAGGLE_CONFIG_DIR=str(home / "kaggle-config"),
        XDG_CONFIG_HOME=str(home / ".config"),
    )
    if server is not None:
        env.update(server.client_env())
    return env


def public_mask(n: int, fraction: float = 0.3, seed: int = 0) -> np.ndarray:
    """Kaggle-style fixed split: a seeded random `fraction` of the `n` solution rows is public, the rest private."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"public fraction must lie in (0, 1], got {fraction}")
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[: max(1, round(fraction * n))]] = True
    return mask


@dataclass
class Faults:
    """Knobs tests turn to make the server misbehave like the real one can."""

    stall_after: int | None = None  # bytes of a full download sent before the transfer stalls
    stalled: threading.Event = field(default_factory=threading.Event)  # set once a download has stalled
    release: threading.Event = field(default_factory=threading.Event)  # set to end a stall (connection dropped)
    advertised_bytes: int | None = None  # ListDataFiles reports one file of this size (disk-space checks)
    range_requests: int = 0  # how many downloads resumed with a Range header
    downloads: int = 0  # how many whole-file downloads started
    replace_archive: dict[str, Path] = field(default_factory=dict)  # slug -> file served as its download instead


@dataclass
class _Submission:
    ref: int
    competition: str
    file_name: str
    description: str
    date: datetime
    size: int
    status: str = "COMPLETE"
    public: float | None = None
    private: float | None = None
    error: str = ""
    team: str = "fake-team"  # the user who submitted (one-person teams)


@dataclass
class _Competition:
    slug: str
    tasks: tuple[str, ...]
    files: list[tuple[str, Path]]  # (name in the listing and archive, file on disk)
    archive: Path
    etag: str
    modified: str  # HTTP date


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("fake Kaggle: client %s went away", client_address)  # a killed or interrupted client
            return
        super().handle_error(request, client_address)


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _top_components(layout: LayoutParams, names: Iterable[str]) -> list[str]:
    tops = {str(getattr(layout, n)).replace("\\", "/").split("/")[0] for n in names}
    return sorted(tops)


def _walk(root: Path, tops: list[str]) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for top in tops:
        path = root / top
        if path.is_file():
            out.append((top, path))
        elif path.is_dir():
            out += [(p.relative_to(root).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file()]
    return out


class FakeKaggle:
    """The server; use as a context manager, or `start()` / `stop()`.

    Args:
        competition: a competition root in the HW2P2 layout (what the download serves).
        solution: folder with `classification_solution.csv` and `verification_solution.csv`.
        kaggle: the slugs; the classification slug serves the classification half of the layout and the
            verification slug the other half, as the course ran them; one slug for both serves everything.
        top_folder: wrap the archive's entries in this folder, as real competition archives often do.
        credentials: if given, (username, key) that basic auth must match; otherwise any credentials pass.
        rules_not_accepted: slugs that answer 403, as Kaggle does before the user accepts the rules.
        lifetime: seconds after which the server stops by itself (None: until `stop()`).
    """

    def __init__(
        self,
        competition: str | Path,
        solution: str | Path,
        kaggle: KaggleParams | None = None,
        layout: LayoutParams | None = None,
        submission: SubmissionParams | None = None,
        top_folder: str | None = None,
        public_fraction: float = 0.3,
        split_seed: int = 0,
        credentials: tuple[str, str] | None = None,
        rules_not_accepted: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        lifetime: float | None = None,
    ) -> None:
        self.root = Path(competition)
        self.solution = Path(solution)
        self.kaggle = kaggle or KaggleParams()
        self.layout = layout or LayoutParams()
        self.headers = submission or SubmissionParams()
        self.top_folder = top_folder.strip("/") if top_folder else None
        self.public_fraction = public_fraction
        self.split_seed = split_seed
        self.credentials = credentials
        self.rules_not_accepted = set(rules_not_accepted)
        self.faults = Faults()
        self.submissions: list[_Submission] = []
        self._uploads: dict[str, tuple[str, str, bytes | None]] = {}  # token -> (slug, file name, data)
        self._lock = threading.Lock()
        self._last_ref = 50_000_000  # submission refs, like Kaggle's large integers
        self._lifetime = lifetime
        self._work = Path(tempfile.mkdtemp(prefix="fake-kaggle-"))
        self._competitions: dict[str, _Competition] = {}
        self._masks: dict[str, np.ndarray] = {}
        self._build()
        self._httpd = _Server((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # ---- setup -------------------------------------------------------------------------------------------

    def _build(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: competition folder not found")
        tasks: dict[str, list[str]] = {}
        tasks.setdefault(self.kaggle.classification, []).append(CLASSIFICATION)
        tasks.setdefault(self.kaggle.verification, []).append(VERIFICATION)
        for slug, slug_tasks in tasks.items():
            names = [*CLASSIFICATION_ENTRIES] * (CLASSIFICATION in slug_tasks) + [*VERIFICATION_ENTRIES] * (
                VERIFICATION in slug_tasks
            )
            files = _walk(self.root, _top_components(self.layout, names))
            if not files:
                raise FileNotFoundError(f"{self.root}: none of the layout entries for '{slug}' exist")
            archive = self._work / f"{slug}.zip"
            with zipfile.ZipFile(archive, "w") as zf:
                for name, path in files:
                    arcname = f"{self.top_folder}/{name}" if self.top_folder else name
                    info = zipfile.ZipInfo(arcname, _FIXED_ZIP_TIME)
                    stored = path.suffix.lower() in (".jpg", ".jpeg", ".png", ".zip")
                    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, path.read_bytes())
            digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:32]
            self._competitions[slug] = _Competition(
                slug, tuple(slug_tasks), files, archive, f'"{digest}"', email.utils.formatdate(usegmt=True)
            )
        for task in (CLASSIFICATION, VERIFICATION):
            solution = self.solution / SOLUTION_FILES[task]
            if not solution.is_file():
                raise FileNotFoundError(f"{solution}: solution file not found")
            with open(solution, "rb") as f:
                rows = sum(1 for line in f if line.strip()) - 1
            self._masks[task] = public_mask(rows, self.public_fraction, self.split_seed)

    # ---- life cycle --------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment that points the real kaggle 2.x client at this server (merge into a copy of os.environ)."""
        return {
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "http_proxy": self.url,
            "HTTP_PROXY": self.url,
            "no_proxy": "",
            "NO_PROXY": "",
        }

    def public_mask(self, task: str) -> np.ndarray:
        """The public rows of `task`'s solution (the private ones are the rest)."""
        return self._masks[task].copy()

    def start(self) -> FakeKaggle:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-kaggle", daemon=True)
        self._thread.start()
        if self._lifetime:
            self._timer = threading.Timer(self._lifetime, self._expire)
            self._timer.daemon = True
            self._timer.start()
        log.info("fake Kaggle listening on %s", self.url)
        return self

    def _expire(self) -> None:
        log.warning(
            "fake Kaggle stops: its lifetime of %s is over; start it with --lifetime 0 to serve until Ctrl-C "
            "(or --lifetime SECONDS)",
            _duration(self._lifetime or 0),
        )
        self.stop()

    def stop(self) -> None:
        self.faults.release.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not None and self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        shutil.rmtree(self._work, ignore_errors=True)

    def wait(self) -> None:
        """Block until the server stops (lifetime over, or Ctrl-C)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- RPCs --------------------------------------------------------------------------------------------

    def _competition(self, slug: str, *, participate: bool = True) -> _Competition:
        comp = self._competitions.get(slug)
        if comp is None:
            raise ApiError(404, f"Competition '{slug}' not found")
        if participate and slug in self.rules_not_accepted:
            raise ApiError(403, "You must accept this competition's rules before you'll be able to participate")
        return comp

    def rpc(self, method: str, body: dict[str, Any], host: str, user: str) -> Any:
        """Answer one RPC: a kagglesdk object, or ("redirect", url)."""
        from kagglesdk.competitions.types import competition_api_service as t
        from kagglesdk.security.types.oauth_service import IntrospectTokenRequest, IntrospectTokenResponse

        if method == "security.OAuthService/IntrospectToken":
            IntrospectTokenRequest.from_dict(body)
            resp = IntrospectTokenResponse()
            resp.active, resp.username = True, user or "fake-user"
            return resp
        service, _, name = method.partition("/")
        if service != "competitions.CompetitionApiService":
            raise ApiError(404, f"{method} is not served by the fake Kaggle")
        if name == "ListDataFiles":
            req = t.ApiListDataFilesRequest.from_dict(body)
            comp = self._competition(req.competition_name, participate=False)
            start = int(req.page_token or 0)
            size = min(req.page_size or 20, 1000)
            listing = comp.files
            if self.faults.advertised_bytes is not None:
                listing = [("everything.zip", comp.archive)]
            files = []
            for fname, path in listing[start : start + size]:
                f = t.ApiDataFile()
                f.ref, f.name = fname, fname
                f.total_bytes = self.faults.advertised_bytes or path.stat().st_size
                f.creation_date = datetime(2019, 2, 1)
                files.append(f)
            resp = t.ApiListDataFilesResponse()
            resp.files = files
            if start + size < len(listing):
                resp.next_page_token = str(start + size)
            return resp
        if name == "DownloadDataFiles":
            req = t.ApiDownloadDataFilesRequest.from_dict(body)
            comp = self._competition(req.competition_name)
            return ("redirect", f"http://{host}/files/{urllib.parse.quote(comp.slug)}.zip")
        if name == "DownloadDataFile":
            req = t.ApiDownloadDataFileRequest.from_dict(body)
            comp = self._competition(req.competition_name)
            if req.file_name not in dict(comp.files):
                raise ApiError(404, f"File '{req.file_name}' not found in '{comp.slug}'")
            return (
                "redirect",
                f"http://{host}/files/{urllib.parse.quote(comp.slug)}/{urllib.parse.quote(req.file_name)}",
            )
        if name == "StartSubmissionUpload":
            req = t.ApiStartSubmissionUploadRequest.from_dict(body)
            comp = self._competition(req.competition_name or "")
            token = uuid.uuid4().hex
            with self._lock:
                self._uploads[token] = (comp.slug, req.file_name, None)
            resp = t.ApiStartSubmissionUploadResponse()
            resp.token, resp.create_url = token, f"http://{host}/upload/{token}"
            return resp
        if name == "CreateSubmission":
            req = t.ApiCreateSubmissionRequest.from_dict(body)
            comp = self._competition(req.competition_name)
            upload = self._uploads.get(req.blob_file_tokens)
            if upload is None or upload[0] != comp.slug or upload[2] is None:
                raise ApiError(400, "Unknown or incomplete upload token")
            sub = self._score(comp, upload[1], upload[2], req.submission_description or "", user)
            resp = t.ApiCreateSubmissionResponse()
            resp.message, resp.ref = f"Successfully submitted to {comp.slug}", sub.ref
            return resp
        if name == "ListSubmissions":
            req = t.ApiListSubmissionsRequest.from_dict(body)
            comp = self._competition(req.competition_name)
            subs = sorted(
                (s for s in self.submissions if s.competition == comp.slug), key=lambda s: (s.date, s.ref), reverse=True
            )
            size = req.page_size or 20
            start = int(req.page_token) if req.page_token else ((req.page or 1) - 1) * size
            resp = t.ApiListSubmissionsResponse()
            resp.submissions = [self._api_submission(s) for s in subs[start : start + size]]
            if start + size < len(subs):
                resp.next_page_token = str(start + size)
            return resp
        if name == "GetSubmission":
            req = t.ApiGetSubmissionRequest.from_dict(body)
            for s in self.submissions:
                if s.ref == req.ref:
                    return self._api_submission(s)
            raise ApiError(404, f"Submission {req.ref} not found")
        if name == "GetLeaderboard":
            req = t.ApiGetLeaderboardRequest.from_dict(body)
            comp = self._competition(req.competition_name, participate=False)
            resp = t.ApiGetLeaderboardResponse()
            board = self.leaderboard(comp.slug)
            size = req.page_size or 20
            start = int(req.page_token or 0)
            resp.submissions = [self._api_leaderboard_row(r) for r in board[start : start + size]]
            if start + size < len(board):
                resp.next_page_token = str(start + size)
            return resp
        if name == "GetSubmissionLimits":
            req = t.ApiGetSubmissionLimitsRequest.from_dict(body)
            comp = self._competition(req.competition_name)
            resp = t.ApiSubmissionLimits()
            resp.num_total = sum(s.competition == comp.slug for s in self.submissions)
            resp.num_today, resp.num_allowed_now = resp.num_total, max(0, 100 - resp.num_total)
            return resp
        raise ApiError(404, f"{method} is not served by the fake Kaggle")

    def leaderboard(self, slug: str) -> list[_Submission]:
        """Each team's best scored submission to `slug` (public score; earliest first on ties), best first."""
        best: dict[str, _Submission] = {}
        for s in sorted(self.submissions, key=lambda s: (s.date, s.ref)):
            if s.competition == slug and s.status == "COMPLETE" and s.public is not None:
                kept = best.get(s.team)
                if kept is None or s.public > (kept.public or 0.0):
                    best[s.team] = s
        return sorted(best.values(), key=lambda s: (-(s.public or 0.0), s.date))

    def _api_leaderboard_row(self, s: _Submission) -> Any:
        from kagglesdk.competitions.types.competition_api_service import ApiLeaderboardSubmission

        teams = sorted({x.team for x in self.submissions})
        out = ApiLeaderboardSubmission()
        out.team_id, out.team_name = 1 + teams.index(s.team), s.team
        out.submission_date, out.score = s.date, repr(s.public)
        return out

    def _api_submission(self, s: _Submission) -> Any:
        from kagglesdk.competitions.types.competition_api_service import ApiSubmission
        from kagglesdk.competitions.types.submission_status import SubmissionStatus

        out = ApiSubmission()
        out.ref, out.file_name, out.description, out.date, out.total_bytes = (
            s.ref,
            s.file_name,
            s.description,
            s.date,
            s.size,
        )
        out.status = SubmissionStatus[s.status]
        out.public_score = "" if s.public is None else repr(s.public)
        out.private_score = "" if s.private is None else repr(s.private)
        out.error_description = s.error or None
        out.submitted_by, out.team_name = s.team, s.team
        return out

    def _task_of(self, comp: _Competition, data: bytes) -> str:
        if len(comp.tasks) == 1:
            return comp.tasks[0]
        first = data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").rstrip("\r")
        if first == ",".join(self.headers.verification_header):
            return VERIFICATION
        return CLASSIFICATION

    def _score(
        self, comp: _Competition, file_name: str, data: bytes, description: str, team: str = "fake-team"
    ) -> _Submission:
        """Score an upload with the pipeline's own scorer, on the public and the private rows separately."""
        from pipeline.submission import score_classification, score_verification

        task = self._task_of(comp, data)
        with self._lock:
            self._last_ref += 1
            ref = self._last_ref
        path = self._work / "uploads" / str(ref) / (posixpath.basename(file_name) or "submission.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        now = datetime.now(UTC).replace(tzinfo=None)
        sub = _Submission(ref, comp.slug, path.name, description, now, len(data), team=team or "fake-team")
        solution = self.solution / SOLUTION_FILES[task]
        header = self.headers.classification_header if task == CLASSIFICATION else self.headers.verification_header
        scorer: Callable[..., float] = score_classification if task == CLASSIFICATION else score_verification
        mask = self._masks[task]
        try:
            sub.public = float(scorer(path, solution, header, rows=mask))
            sub.private = float(scorer(path, solution, header, rows=~mask)) if (~mask).any() else None
        except (ValueError, OSError) as err:
            reason = str(err).replace(str(path.parent) + "/", "").replace(str(solution), solution.name)
            rows = sum(1 for line in data.splitlines() if line.strip()) - 1
            if rows != len(mask):  # most likely a submission written for another competition
                reason += (
                    f" [this local Kaggle serves the competition in {self.root}, {len(mask)} {task} rows; "
                    "to score the submissions `make repro` wrote, start it with --project .]"
                )
            sub.status, sub.error = "ERROR", reason
        log.info(
            "submission %d to %s (%s): %s public=%s private=%s",
            ref,
            comp.slug,
            task,
            sub.status,
            sub.public,
            sub.private,
        )
        with self._lock:
            self.submissions.append(sub)
        return sub

    def store_upload(self, token: str, data: bytes) -> bool:
        with self._lock:
            if token not in self._uploads:
                return False
            slug, name, _ = self._uploads[token]
            self._uploads[token] = (slug, name, data)
        return True

    def check_auth(self, header: str | None) -> str | None:
        """The user name for an Authorization header, or None when it is missing or (if checked) wrong."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme == "Bearer" and value:
            return "token-user" if self.credentials is None else None
        if scheme == "Basic":
            try:
                user, _, key = base64.b64decode(value).decode("utf-8").partition(":")
            except ValueError:
                return None
            if self.credentials is None or (user, key) == self.credentials:
                return user
        return None

    def file_for(self, path: str) -> tuple[Path, _Competition] | None:
        """The file behind a download URL path (`/files/<slug>.zip` or `/files/<slug>/<name>`)."""
        rest = urllib.parse.unquote(path.removeprefix("/files/"))
        for comp in self._competitions.values():
            if rest == f"{comp.slug}.zip":
                return self.faults.replace_archive.get(comp.slug, comp.archive), comp
            if rest.startswith(f"{comp.slug}/"):
                found = dict(comp.files).get(rest[len(comp.slug) + 1 :])
                if found is not None:
                    return found, comp
        return None


def _duration(seconds: float) -> str:
    """A lifetime as a person would say it: "1 h", "10 min", "2.5 s"."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _handler_for(server: FakeKaggle) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("fake Kaggle: " + format, *args)  # never the headers: they carry credentials

        def _path(self) -> str:
            # Through a proxy the request line holds the absolute URL; directly, just the path.
            return urllib.parse.urlsplit(self.path).path

        def _host(self) -> str:
            return self.headers.get("Host") or f"127.0.0.1:{server.port}"

        def _send(
            self, code: int, body: bytes = b"", ctype: str = "application/json", extra: dict | None = None
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, code: int, message: str) -> None:
            self._send(code, json.dumps({"code": code, "message": message}).encode())

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_POST(self) -> None:
            path = self._path()
            body = self._body()
            if not path.startswith("/api/v1/"):
                return self._error(404, f"no route {path}")
            user = server.check_auth(self.headers.get("Authorization"))
            method = path.removeprefix("/api/v1/")
            if user is None:
                return self._error(401, "Unauthenticated")
            try:
                payload = json.loads(body or b"{}")
                result = server.rpc(method, payload, self._host(), user)
            except ApiError as err:
                return self._error(err.code, err.message)
            except (ValueError, TypeError, KeyError) as err:
                return self._error(400, f"bad request to {method}: {err}")
            if isinstance(result, tuple) and result[0] == "redirect":
                return self._send(302, extra={"Location": result[1]})
            self._send(200, result.to_json().encode())

        def do_PUT(self) -> None:
            path = self._path()
            data = self._body()
            if not path.startswith("/upload/") or not server.store_upload(path.removeprefix("/upload/"), data):
                return self._error(404, "unknown upload URL")
            self._send(200, b"{}")

        def do_GET(self) -> None:
            found = server.file_for(self._path())
            if found is None:
                return self._error(404, f"no file at {self._path()}")
            file, comp = found
            data = file.read_bytes()
            etag = comp.etag if file == comp.archive else f'"{hashlib.sha256(data).hexdigest()[:32]}"'
            headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": comp.modified}
            ctype = "application/zip" if file.suffix == ".zip" else "application/octet-stream"
            wanted = self.headers.get("Range", "")
            if_range = self.headers.get("If-Range")
            if wanted.startswith("bytes=") and (if_range is None or if_range == etag):
                server.faults.range_requests += 1
                start = int(wanted.removeprefix("bytes=").split("-")[0] or 0)
                if start >= len(data):
                    return self._send(416, b"", ctype, {"Content-Range": f"bytes */{len(data)}"})
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(206, data[start:], ctype, headers)
            if self.command == "GET":
                server.faults.downloads += 1
            stall = server.faults.stall_after
            if stall is None or stall >= len(data):
                return self._send(200, data, ctype, headers)
            # Promise the whole file, send part of it, then hang: what an interrupted transfer looks like.
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data[:stall])
            self.wfile.flush()
            server.faults.stalled.set()
            server.faults.release.wait(_STALL_LIMIT_S)
            self.close_connection = True

        do_HEAD = do_GET

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.testing.fake_kaggle", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--project",
        type=Path,
        metavar="DIR",
        help="serve DIR/data/raw with DIR/data/solution and DIR/params.yaml (what `make repro` wrote)",
    )
    parser.add_argument("--competition", type=Path, help="competition root in the HW2P2 layout")
    parser.add_argument("--solution", type=Path, help="folder with the two *_solution.csv files")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="DIR",
        help="render a tiny synthetic competition (40 trials) here and serve it; only submissions made for it fit",
    )
    parser.add_argument("--params", type=Path, help="params.yaml for slugs, layout names and headers")
    parser.add_argument("--port", type=int, default=7777, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--top-folder", help="wrap the archive's entries in this folder, e.g. 11-785hw2p2-s20")
    parser.add_argument("--public-fraction", type=float, default=0.3, help="share of rows on the public board")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the public/private split")
    parser.add_argument("--rules-not-accepted", action="append", default=[], metavar="SLUG", help="answer 403")
    parser.add_argument(
        "--lifetime",
        type=float,
        metavar="SECONDS",
        default=3600.0,
        help="stop by itself after this many seconds (default: an hour); 0: serve until Ctrl-C",
    )
    args = parser.parse_args(argv)
    if args.lifetime < 0:
        parser.error(f"--lifetime must be 0 (no limit) or positive, got {args.lifetime:g}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.project:
        if args.render or args.competition or args.solution:
            parser.error("--project serves DIR/data/raw and DIR/data/solution: give it without --render/--competition")
        args.competition, args.solution = args.project / paths.RAW, args.project / paths.SOLUTION
        if args.params is None and (args.project / "params.yaml").is_file():
            args.params = args.project / "params.yaml"
        if not args.competition.is_dir() or not args.solution.is_dir():
            parser.error(
                f"{args.project} has no {paths.RAW} and {paths.SOLUTION} yet: run `make repro` (or `dvc repro`) "
                "first, with data.source synthetic or imagefolder (the sources with hidden answers)"
            )
    params = load_params(args.params, check_model=False) if args.params else None
    if args.render:
        args.competition, args.solution = render_tiny(args.render, params.layout if params else None)
    if not args.competition or not args.solution:
        parser.error("give --competition and --solution, or --render DIR")
    try:
        server = FakeKaggle(
            args.competition,
            args.solution,
            kaggle=params.kaggle if params else None,
            layout=params.layout if params else None,
            submission=params.submission if params else None,
            top_folder=args.top_folder,
            public_fraction=args.public_fraction,
            split_seed=args.split_seed,
            rules_not_accepted=args.rules_not_accepted,
            port=args.port,
            lifetime=args.lifetime or None,
        )
    except FileNotFoundError as err:
        answers = args.project is not None and "solution file not found" in str(err)
        parser.error(f"{err}" + (" (hidden answers exist only for data.source synthetic or imagefolder)" * answers))
    except OSError as err:
        parser.error(f"cannot listen on 127.0.0.1:{args.port}: {err.strerror or err} (--port 0 picks a free port)")

    def terminated(signum: int, frame: object) -> None:  # `kill PID` says why it stops too, like the lifetime does
        def stop() -> None:
            log.info("fake Kaggle stops: terminated (SIGTERM)")
            server.stop()

        threading.Thread(target=stop, daemon=True).start()  # not in the handler: it may interrupt a log call

    signal.signal(signal.SIGTERM, terminated)
    server.start()
    for slug, comp in server._competitions.items():
        log.info("serving %s (%s): %d files from %s", slug, " + ".join(comp.tasks), len(comp.files), args.competition)
    env = " ".join(f"{k}={v}" for k, v in server.client_env().items() if k.islower() or k.startswith("KAGGLE"))
    log.info("point the kaggle client here with: export %s KAGGLE_USERNAME=me KAGGLE_KEY=anything", env)
    if args.lifetime:
        log.info("serving for %s, then stopping (--lifetime 0: until Ctrl-C)", _duration(args.lifetime))
    else:
        log.info("serving until Ctrl-C")

    try:
        server.wait()
    except KeyboardInterrupt:
        log.info("fake Kaggle stops: interrupted (Ctrl-C)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
