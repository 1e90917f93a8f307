"""Render a fairfix HTML report in headless Chromium: a screenshot, and proof of no network use.

    python scripts/screenshot_report.py PAGE.html OUT.png [--expect TEXT] [--height 2000]
        [--chromium /usr/bin/chromium] [--netlog-dir DIR]

Chromium (Debian package ``chromium``) runs twice on ``file://PAGE``, each time with a
fresh profile and a net log (``--log-net-log``):

1. ``--screenshot=OUT.png --window-size=WIDTH,HEIGHT``: what a person sees;
2. ``--dump-dom``: the document after parsing, which must contain ``--expect`` TEXT.

Each net log is then read for URL requests.  A request the page made carries the
page as its initiator (``"null"``: a ``file://`` page has an opaque origin) or a
``file://`` network isolation key; any such request to a URL that is not ``file:``
or ``data:`` fails the check, as does a Content-Security-Policy refusal in
Chromium's console log.  Chromium itself also calls home at start-up (network
time, component updates, ``accounts.google.com/ListAccounts``, which no flag turns
off); those carry no initiator (``"not an origin"``), are listed apart as
``browser_requests``, and never leave the machine: ``--host-resolver-rules``
resolves every host to nothing.

Prints a JSON summary on stdout; exit 0 when the screenshot exists, the DOM holds
TEXT and the page made no network request, else 1 (2 when Chromium is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-error:")
BASE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--disable-breakpad", "--no-pings",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection",
    "--disable-features=NetworkTimeServiceQuerying,MediaRouter,OptimizationHints,Translate",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing Chromium tries can leave the machine
    "--hide-scrollbars", "--force-color-profile=srgb",
    "--enable-logging=stderr", "--v=0",
]


def run_chromium(chromium: str, url: str, extra: list[str], workdir: Path, name: str,
                 timeout: float) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run Chromium once on ``url`` with a fresh profile; return the process and its net log."""
    profile = workdir / f"profile-{name}"
    profile.mkdir()
    netlog = workdir / f"netlog-{name}.json"
    cmd = [chromium, *BASE_FLAGS, f"--user-data-dir={profile}", f"--log-net-log={netlog}",
           *extra, url]
    # Its own session: on a timeout the whole tree (zygote, renderer, GPU process) is killed.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n(timed out after {timeout:g} s)"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), netlog


def read_netlog(path: Path) -> dict[str, Any]:
    """A net log as JSON; a log cut short (Chromium killed) is closed the way Chromium documents."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(text.rstrip().rstrip(",") + "]}")


def url_requests(netlog: dict[str, Any]) -> list[dict[str, Any]]:
    """Every URL request in a net log: url, initiator, network isolation key, from_page."""
    types = {v: k for k, v in netlog["constants"]["logEventTypes"].items()}
    found = []
    for event in netlog.get("events", []):
        params = event.get("params") or {}
        if types.get(event.get("type")) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        initiator = params.get("initiator", "")
        nik = params.get("network_isolation_key", "")
        found.append({
            "url": params["url"],
            "initiator": initiator,
            "network_isolation_key": nik,
            "from_page": initiator != "not an origin" or nik.startswith("file://")
            or "file://" in params.get("site_for_cookies", ""),
        })
    return found


def is_local(url: str) -> bool:
    """True for URLs that need no network: file:, data: and the browser's own schemes."""
    return url.lower().startswith(LOCAL_SCHEMES)


def check_page(page: Path, png: Path, *, chromium: str = CHROMIUM, width: int = 1280,
               height: int = 2000, expect: str = "fairfix", netlog_dir: Path | None = None,
               timeout: float = 120.0) -> dict[str, Any]:
    """Screenshot ``page`` into ``png`` and check that it loads nothing from the network."""
    url = page.resolve().as_uri()
    png = png.resolve()
    with tempfile.TemporaryDirectory(prefix="fairfix-chromium-") as tmp:
        work = Path(tmp)
        shot, shot_log = run_chromium(chromium, url, [f"--screenshot={png}",
                                                      f"--window-size={width},{height}"],
                                      work, "screenshot", timeout)
        dom, dom_log = run_chromium(chromium, url, ["--dump-dom"], work, "dom", timeout)
        requests: list[dict[str, Any]] = []
        logs_read = sum(log.is_file() for log in (shot_log, dom_log))
        for log in (shot_log, dom_log):
            if log.is_file():
                requests += url_requests(read_netlog(log))
            if netlog_dir is not None and log.is_file():
                netlog_dir.mkdir(parents=True, exist_ok=True)
                (netlog_dir / log.name).write_bytes(log.read_bytes())
    console = [line for p in (shot, dom) for line in p.stderr.splitlines() if "CONSOLE" in line]
    refused = [line for line in console
               if "Refused to" in line or "Content Security Policy" in line]
    page_requests = sorted({r["url"] for r in requests
                            if r["from_page"] and not is_local(r["url"])})
    browser_requests = sorted({r["url"].split("?")[0] for r in requests
                               if not r["from_page"] and not is_local(r["url"])})
    summary = {
        "page": str(page),
        "screenshot": str(png),
        "screenshot_bytes": png.stat().st_size if png.is_file() else 0,
        "dom_has_expected_text": expect in dom.stdout,
        "netlogs_read": logs_read,
        "url_requests_logged": len(requests),
        "page_requests": page_requests,
        "browser_requests": browser_requests,
        "csp_refusals": refused,
        "chromium_exit": [shot.returncode, dom.returncode],
    }
    summary["ok"] = (summary["screenshot_bytes"] > 0 and summary["dom_has_expected_text"]
                     and summary["netlogs_read"] == 2 and not page_requests and not refused
                     and shot.returncode == 0 and dom.returncode == 0)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the HTML file (fairfix report --html)")
    parser.add_argument("png", type=Path, help="where to write the screenshot")
    parser.add_argument("--chromium", default=CHROMIUM, help="the Chromium binary")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--expect", default="fairfix", help="text the DOM must contain")
    parser.add_argument("--netlog-dir", type=Path, help="keep the two net logs here")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per Chromium run")
    args = parser.parse_args(argv)
    if not Path(args.chromium).is_file():
        print(f"screenshot_report: no Chromium at {args.chromium} (apt-get install chromium)",
              file=sys.stderr)
        return 2
    if not args.page.is_file():
        print(f"screenshot_report: {args.page}: no such file", file=sys.stderr)
        return 2
    summary = check_page(args.page, args.png, chromium=args.chromium, width=args.width,
                         height=args.height, expect=args.expect, netlog_dir=args.netlog_dir,
                         timeout=args.timeout)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
