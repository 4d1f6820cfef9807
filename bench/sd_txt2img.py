"""Stable Diffusion txt2img through a real comfyserve server: seconds per image and sampler it/s.

Generates (or reuses, cached in `.cache/golden/`) the random-weight SD1.5 checkpoint with the
project's own generator (tests/models/golden_checkpoint.py, ../shared/golden/RECIPE.md; every
tensor is checked against tests/data/manifest_<variant>.json), starts `python -m comfyserve` on a
free port with a temporary base directory whose models/checkpoints holds a symlink to it, and
posts ComfyUI's default txt2img workflow (CheckpointLoaderSimple -> CLIPTextEncode x2 ->
EmptyLatentImage -> KSampler euler/normal, 20 steps, cfg 8 -> VAEDecode -> SaveImage): warm-up
runs, then timed runs. Each run has its own seed, so the sampler, decoder and save run every
time while the loaded model and the text encodings stay cached, as on a warm ComfyUI server.

Per run, measured on the websocket from this client (timestamps taken on receipt):
  * seconds per image: POST /prompt -> `executing {node: null}`, divided by the batch size;
  * sampler it/s: (steps - 1) / (time between the first and last KSampler `progress` message),
    i.e. batch steps per second, as ComfyUI's progress bar shows it;
  * seconds per node: from each `executing {node}` to the next.
The record (JSON) holds the machine (GPU name, torch and CUDA versions, CPU count), the server's
`/system_stats` before and after the runs, the configuration and every run.

    python3 bench/sd_txt2img.py                                  # GPU: sd15, 512x512, 20 steps
    python3 bench/sd_txt2img.py --server-arg=--highvram --runs 10
    .venv/bin/python bench/sd_txt2img.py --variant sd15-mini --size 64 --steps 2 --runs 1   # CPU smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.models.golden_checkpoint import CONTENT_SHA256, FILE_NAMES, cached, link_into  # noqa: E402

KSAMPLER = "3"


def default_workflow(ckpt_name: str, width: int, height: int, batch: int, steps: int, cfg: float,
                     sampler: str, scheduler: str, seed: int) -> dict:
    """ComfyUI's default graph (the one the front end opens with), in API format, same node ids."""
    return {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {
            "text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen, log: Path,
                     timeout: float) -> None:
    """Poll /object_info/SaveImage until the nodes are loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n" + "\n".join(log_tail(log)))
        try:
            async with session.get(url + "/object_info/SaveImage") as resp:
                if resp.status == 200 and (await resp.json()):
                    return
        except (aiohttp.ClientError, ValueError):
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"server not ready in {timeout}s:\n" + "\n".join(log_tail(log)))


async def system_stats(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "/system_stats") as resp:
        return await resp.json()


async def one_run(session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, url: str,
                  client_id: str, prompt: dict, steps: int, batch: int, timeout: float) -> dict:
    """Post one prompt and follow it on the websocket until `executing {node: null}`."""
    t_post = time.perf_counter()
    async with session.post(url + "/prompt", json={"prompt": prompt, "client_id": client_id}) as resp:
        answer = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"POST /prompt {resp.status}: {json.dumps(answer)[:2000]}")
    t_answer = time.perf_counter()
    prompt_id = answer["prompt_id"]
    progress: list[tuple[float, int]] = []
    node_starts: list[tuple[float, str]] = []
    cached_nodes: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        now = time.perf_counter()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            raise RuntimeError(f"websocket closed: {msg}")
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue  # binary preview frames (none unless a preview method is set)
        data = json.loads(msg.data)
        kind, body = data.get("type"), data.get("data") or {}
        if body.get("prompt_id") not in (None, prompt_id):
            continue
        if kind == "execution_error":
            raise RuntimeError(f"execution_error: {json.dumps(body)[:4000]}")
        if kind == "execution_interrupted":
            raise RuntimeError(f"execution_interrupted: {json.dumps(body)[:2000]}")
        if kind == "execution_cached":
            cached_nodes = list(body.get("nodes") or [])
        elif kind == "progress" and str(body.get("node")) == KSAMPLER:
            progress.append((now, int(body["value"])))
        elif kind == "executing" and body.get("prompt_id") == prompt_id:
            node = body.get("node")
            if node is None:
                t_done = now
                break
            node_starts.append((now, str(node)))
    seconds = t_done - t_post
    node_seconds = {}
    for (t0, node), (t1, _) in zip(node_starts, node_starts[1:] + [(t_done, "")], strict=True):
        node_seconds[node] = round(node_seconds.get(node, 0.0) + t1 - t0, 4)
    span = progress[-1][0] - progress[0][0] if len(progress) >= 2 else 0.0
    ksampler_s = node_seconds.get(KSAMPLER)
    return {
        "prompt_id": prompt_id,
        "seed": prompt[KSAMPLER]["inputs"]["seed"],
        "seconds": round(seconds, 4),
        "seconds_per_image": round(seconds / batch, 4),
        "post_ms": round((t_answer - t_post) * 1000, 2),
        "progress_messages": len(progress),
        "progress_values_ok": [v for _, v in progress] == list(range(1, steps + 1)),
        "sampler_span_s": round(span, 4),
        "it_per_s": round((len(progress) - 1) / span, 3) if span > 0 else None,
        # Cross-check that does not depend on when the progress messages leave the GPU's queue:
        # steps / the KSampler node's whole time (noise, model placement and set-up included).
        "ksampler_node_it_per_s": round(steps / ksampler_s, 3) if ksampler_s else None,
        "first_progress_after_post_s": round(progress[0][0] - t_post, 4) if progress else None,
        "after_last_progress_s": round(t_done - progress[-1][0], 4) if progress else None,
        "node_seconds": node_seconds,
        "cached_nodes": cached_nodes,
    }


async def bench(args: argparse.Namespace, checkpoint: Path) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base = Path(tempfile.mkdtemp(prefix="comfyserve-sdbench-"))
    link_into(checkpoint, base / "models" / "checkpoints")
    log = base / "server.log"
    cmd = [sys.executable, "-m", "comfyserve", "--port", str(port), "--base-directory", str(base),
           *args.server_arg]
    record: dict = {"server_command": cmd}
    started = time.perf_counter()
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await wait_ready(session, url, proc, log, args.startup_timeout)
            record["startup_s"] = round(time.perf_counter() - started, 3)
            record["system_stats_before"] = await system_stats(session, url)
            client_id = uuid.uuid4().hex
            ws = await session.ws_connect(f"{url}/ws?clientId={client_id}", max_msg_size=0)
            runs: list[dict] = []
            for i in range(args.warmup + args.runs):
                prompt = default_workflow(checkpoint.name, args.width, args.height, args.batch, args.steps,
                                          args.cfg, args.sampler, args.scheduler, args.seed + i)
                result = await one_run(session, ws, url, client_id, prompt, args.steps, args.batch,
                                       args.prompt_timeout)
                result["warmup"] = i < args.warmup
                runs.append(result)
                label = "warm-up" if result["warmup"] else f"run {i - args.warmup + 1}/{args.runs}"
                print(f"{label}: {result['seconds']:.3f} s ({result['seconds_per_image']:.3f} s/image), "
                      f"sampler {result['it_per_s']} it/s, nodes {result['node_seconds']}", flush=True)
            await ws.close()
            record["system_stats_after"] = await system_stats(session, url)
        record["warmup_runs"] = [r for r in runs if r["warmup"]]
        record["runs"] = [r for r in runs if not r["warmup"]]
        record["server_peak_rss_mb"] = peak_rss_mb(proc.pid)
    except BaseException:
        print("server log tail:\n" + "\n".join(log_tail(log)), file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        record["server_log_tail"] = log_tail(log)
        if args.keep:
            print(f"base directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return record


def peak_rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmHWM")), None)
    return int(line.split()[1]) / 1024 if line else None


def summary(runs: list[dict]) -> dict:
    out: dict = {}
    for key in ("seconds_per_image", "it_per_s", "ksampler_node_it_per_s"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            out[key] = {"median": round(statistics.median(values), 4), "mean": round(statistics.fmean(values), 4),
                        "min": min(values), "max": max(values)}
    return out


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def machine() -> dict:
    """This machine; torch is imported only here, after the server has stopped."""
    info: dict = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    import numpy
    import torch

    info.update(torch=torch.__version__, numpy=numpy.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        info["gpus"] = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append({"name": torch.cuda.get_device_name(index), "capability": f"{props.major}.{props.minor}",
                                 "memory_gib": round(props.total_memory / 2**30, 1),
                                 "multiprocessors": props.multi_processor_count})
        info["gpu"] = info["gpus"][0]["name"]
    if shutil.which("nvidia-smi"):
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="sd15", choices=sorted(v for v in FILE_NAMES if v.startswith("sd15")),
                        help="generated checkpoint: sd15 (full size, ~2.1 GB) or sd15-mini (CPU smoke runs)")
    parser.add_argument("--size", type=int, default=512, help="width and height (default 512)")
    parser.add_argument("--width", type=int, help="overrides --size")
    parser.add_argument("--height", type=int, help="overrides --size")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cfg", type=float, default=8.0)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--scheduler", default="normal")
    parser.add_argument("--seed", type=int, default=156680208700286, help="seed of the first run (+1 per run)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra comfyserve flag, repeatable: --server-arg=--highvram")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--startup-timeout", type=float, default=180)
    parser.add_argument("--prompt-timeout", type=float, default=900)
    parser.add_argument("--keep", action="store_true", help="keep the temporary base directory (images, log)")
    args = parser.parse_args()
    args.width = args.width or args.size
    args.height = args.height or args.size

    t0 = time.perf_counter()
    checkpoint = cached(args.variant)
    checkpoint_s = time.perf_counter() - t0
    print(f"checkpoint {checkpoint} ready in {checkpoint_s:.1f} s", flush=True)

    result = asyncio.run(bench(args, checkpoint))
    stats = result.get("system_stats_before", {})
    record = {
        "benchmark": "sd_txt2img",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": git_commit(),
        "config": {
            "variant": args.variant, "checkpoint": checkpoint.name,
            "checkpoint_content_sha256": CONTENT_SHA256[args.variant],
            "width": args.width, "height": args.height, "batch": args.batch, "steps": args.steps,
            "cfg": args.cfg, "sampler": args.sampler, "scheduler": args.scheduler,
            "warmup": args.warmup, "runs": args.runs, "server_args": args.server_arg,
        },
        "summary": summary(result.get("runs", [])),
        "machine": machine(),
        "server_devices": stats.get("devices"),
        "checkpoint_ready_s": round(checkpoint_s, 2),
        **result,
    }
    text = json.dumps(record, indent=2) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sd_txt2img-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(text)
    s = record["summary"]
    print(json.dumps({"gpu": record["machine"].get("gpu"), "server_devices": record["server_devices"],
                      "summary": s}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
