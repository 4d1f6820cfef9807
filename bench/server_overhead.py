"""Server-overhead benchmark, the same measures as ComfyUI 0.8's baseline on this machine.

Measures from outside the process: start-up until /system_stats answers (and until nodes are
loaded), POST /prompt latency on an idle queue, throughput of distinct tiny prompts completed
as seen on the websocket (one client and several), the server's CPU time per prompt in each
burst (steadier than the rate on a VM whose speed varies), GET /object_info latency, and RSS.

    .venv/bin/python bench/server_overhead.py [--out bench/results] [--clients 4] [--prompts 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import psutil

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_prompt(color: int, save: bool = False) -> dict:
    output = "SaveImage" if save else "PreviewImage"
    inputs = {"images": ["1", 0]}
    if save:
        inputs["filename_prefix"] = "bench"
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": output, "inputs": inputs},
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_http(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    body = await resp.read()
                    if body not in (b"{}", b""):
                        return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.005)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Completion:
    """Listens on /ws for `executing {node: null}` per prompt id."""

    def __init__(self) -> None:
        self.done: dict[str, asyncio.Future] = {}
        self.finished: set[str] = set()

    def future(self, prompt_id: str) -> asyncio.Future:
        if prompt_id not in self.done:
            self.done[prompt_id] = asyncio.get_running_loop().create_future()
            if prompt_id in self.finished:
                self.done[prompt_id].set_result(None)
        return self.done[prompt_id]

    async def listen(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            # Only `executing` messages can end a prompt; skipping the parse of the other ~14 per
            # prompt keeps the client (which shares the machine's cores) out of the measurement.
            if msg.type != aiohttp.WSMsgType.TEXT or '"executing"' not in msg.data:
                continue
            data = json.loads(msg.data)
            if data["type"] == "executing" and data["data"].get("node") is None:
                prompt_id = data["data"]["prompt_id"]
                self.finished.add(prompt_id)
                fut = self.done.get(prompt_id)
                if fut is not None and not fut.done():
                    fut.set_result(None)


async def run(args: argparse.Namespace) -> dict:
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix="comfyserve-bench-"))
    url = f"http://127.0.0.1:{port}"
    results: dict = {}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfyserve", "--port", str(port), "--base-directory", str(base), "--cpu"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ps = psutil.Process(proc.pid)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_http(session, url + "/system_stats", proc)
            results["startup_to_system_stats_s"] = time.perf_counter() - started
            await wait_http(session, url + "/object_info/SaveImage", proc)
            results["startup_to_nodes_loaded_s"] = time.perf_counter() - started
            await asyncio.sleep(0.5)
            results["idle_rss_mb"] = ps.memory_info().rss / 2**20

            client_id = uuid.uuid4().hex
            ws = await session.ws_connect(f"{url}/ws?clientId={client_id}")
            completion = Completion()
            listener = asyncio.create_task(completion.listen(ws))
            color = iter(range(1, 10**7))

            async def post(body: dict) -> tuple[str, float]:
                t0 = time.perf_counter()
                async with session.post(url + "/prompt", json=body) as resp:
                    answer = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(answer)
                return answer["prompt_id"], (time.perf_counter() - t0) * 1000

            # 1. POST latency on an idle queue: each prompt finishes before the next is posted.
            latencies = []
            for _ in range(args.idle):
                prompt_id, ms = await post({"prompt": tiny_prompt(next(color)), "client_id": client_id})
                latencies.append(ms)
                await completion.future(prompt_id)
            results["post_idle_p50_ms"], results["post_idle_p99_ms"] = pct(latencies, 0.5), pct(latencies, 0.99)

            # 2. Throughput: distinct tiny prompts posted back to back by N clients.
            for clients in sorted({1, args.clients}):
                burst: list[float] = []
                ids: list[str] = []
                per_client = args.prompts // clients

                async def poster(count: int, burst: list[float], ids: list[str]) -> None:
                    for _ in range(count):
                        prompt_id, ms = await post({"prompt": tiny_prompt(next(color)), "client_id": client_id})
                        burst.append(ms)
                        ids.append(prompt_id)

                cpu0 = cpu_seconds(proc.pid)
                t0 = time.perf_counter()
                await asyncio.gather(*(poster(per_client, burst, ids) for _ in range(clients)))
                await asyncio.gather(*(completion.future(i) for i in ids))
                elapsed = time.perf_counter() - t0
                server_cpu = cpu_seconds(proc.pid) - cpu0
                results[f"throughput_{clients}_clients_per_s"] = len(ids) / elapsed
                results[f"post_burst_{clients}_clients_p50_ms"] = pct(burst, 0.5)
                results[f"post_burst_{clients}_clients_p99_ms"] = pct(burst, 0.99)
                results[f"server_cpu_{clients}_clients_us_per_prompt"] = server_cpu / len(ids) * 1e6

            # 3. GET /object_info.
            info = []
            for _ in range(args.object_info):
                t0 = time.perf_counter()
                async with session.get(url + "/object_info") as resp:
                    await resp.read()
                info.append((time.perf_counter() - t0) * 1000)
            results["object_info_p50_ms"], results["object_info_p99_ms"] = pct(info, 0.5), pct(info, 0.99)
            listener.cancel()
            await ws.close()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        results["peak_rss_mb"] = int(peak.split()[1]) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return results


def machine() -> dict:
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--idle", type=int, default=100)
    parser.add_argument("--object-info", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    runs = [asyncio.run(run(args)) for _ in range(args.runs)]
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "runs": runs}
    print(json.dumps(record, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"server_overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
