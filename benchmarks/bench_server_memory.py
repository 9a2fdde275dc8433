"""Peak memory of a real `streamlit run` server through the whole flow, on the roberta-base and roberta-large
shapes (random weights saved as safetensors folders): home, every page, then Base vs large on the two.

    python -m benchmarks.bench_server_memory

Drives the server with Debian's chromium (Playwright) on loopback and samples the server's resident memory
every 20 ms; the target is under 2.7 GB (Community Cloud's largest container).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from benchmarks.bench_deepdive import save_real_shapes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip
PAGES = ["", "Layer_trajectories", "Rank_plots", "Layer_deep_dive", "Base_vs_large"]


def process_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        base, large = save_real_shapes(folder)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        peak, stop = {"rss": 0, "after": {}}, threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak["rss"] = max(peak["rss"], process_rss(server.pid))

        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(120):
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    time.sleep(0.5)
            idle = process_rss(server.pid)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
                page = browser.new_page()
                query = {"model": base, "model_a": base, "model_b": large}
                for path in PAGES:
                    started = time.monotonic()
                    page.goto(f"{url}/{path}?{urlencode(query)}")
                    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=900_000)
                    peak["after"][path or "home"] = {
                        "seconds": round(time.monotonic() - started, 1),
                        "rss_gb": round(process_rss(server.pid) / 2**30, 3),
                        "errors": page.locator("[data-testid=stAlertContentError], [data-testid=stException]").count(),
                    }
                browser.close()
        finally:
            stop.set()
            server.terminate()
            server.wait(timeout=60)
    report = {
        "server_rss_idle_gb": round(idle / 2**30, 3),
        "server_rss_peak_gb": round(peak["rss"] / 2**30, 3),
        "target_gb": 2.7,
        "pages": peak["after"],
    }
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_server_memory.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
