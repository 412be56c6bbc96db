#!/usr/bin/env python3
"""Facts about the machine the GPU proof kit runs on, as JSON (issue #17).

    python3 ops/gpu/facts.py --out /tmp/warmlane-gpu/facts.json

Writes {"gpu", "python", "torch", "torch_cuda", "onnx", "nproc", "mem_total_bytes",
"pinned_h2d_gbps", "pageable_h2d_gbps", "d2h_pinned_gbps"} and prints the file's path.
Runs with or without torch, CUDA or nvidia-smi: what it cannot measure is null.

Bandwidth (only when torch.cuda.is_available()): a 2 GiB uint8 host buffer of random
bytes, pinned and pageable; one warm-up copy, then 5 timed copies, each between a
pair of torch.cuda.Event(enable_timing=True); the median in GB/s (bytes / 1e9 / s).
H2D is `.to('cuda', non_blocking=True)`, D2H a non-blocking copy into pinned memory.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys

BUFFER_BYTES = 2 << 30
REPS = 5


def gpu_facts():
    """First GPU's name, memory and driver from nvidia-smi (else NVML), or None."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,memory.total,memory.used,driver_version",
                 "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=30, check=True).stdout
            rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
            if rows:
                name, total, used, driver = rows[0][:4]
                return {"name": name, "memory_total_mib": int(float(total)),
                        "memory_used_mib": int(float(used)), "driver": driver,
                        "count": len(rows), "source": "nvidia-smi"}
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            print(f"facts.py: nvidia-smi failed: {exc}", file=sys.stderr)
    try:
        import pynvml  # nvidia-ml-py
        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            if count == 0:
                return None
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            driver = pynvml.nvmlSystemGetDriverVersion()
            return {"name": name.decode() if isinstance(name, bytes) else name,
                    "memory_total_mib": mem.total >> 20, "memory_used_mib": mem.used >> 20,
                    "driver": driver.decode() if isinstance(driver, bytes) else driver,
                    "count": count, "source": "nvml"}
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML (no driver, no package) means no GPU facts
        return None


def module_version(name):
    try:
        module = __import__(name)
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return None
    return getattr(module, "__version__", "unknown")


def mem_total_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def timed_median(torch, copy):
    """Median seconds of REPS copies after one warm-up; copy() returns the destination."""
    dst = copy()
    torch.cuda.synchronize()
    del dst
    times = []
    for _ in range(REPS):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        dst = copy()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
        del dst
    return statistics.median(times)


def bandwidth(torch):
    """(pinned_h2d, pageable_h2d, d2h_pinned) in GB/s."""
    n = BUFFER_BYTES
    # Random bytes, not zeros: 64 MiB of random bytes repeated (fast to make).
    chunk = 64 << 20
    pageable = torch.randint(0, 256, (chunk,), dtype=torch.uint8).repeat(n // chunk)
    pinned = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    pinned.copy_(pageable)
    gbps = lambda s: round(n / 1e9 / s, 2)  # noqa: E731
    pinned_h2d = gbps(timed_median(torch, lambda: pinned.to("cuda", non_blocking=True)))
    pageable_h2d = gbps(timed_median(torch, lambda: pageable.to("cuda", non_blocking=True)))
    device = pinned.to("cuda")
    host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    d2h = gbps(timed_median(torch, lambda: host.copy_(device, non_blocking=True)))
    del device, host, pinned, pageable
    torch.cuda.empty_cache()
    return pinned_h2d, pageable_h2d, d2h


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="where to write the JSON")
    p.add_argument("--no-bandwidth", action="store_true", help="skip the copy timings")
    args = p.parse_args()

    facts = {
        "gpu": gpu_facts(),
        "python": platform.python_version(),
        "torch": None,
        "torch_cuda": None,
        "onnx": module_version("onnx"),
        "nproc": os.cpu_count(),
        "mem_total_bytes": mem_total_bytes(),
        "pinned_h2d_gbps": None,
        "pageable_h2d_gbps": None,
        "d2h_pinned_gbps": None,
    }
    try:
        import torch
        facts["torch"] = torch.__version__
        facts["torch_cuda"] = torch.version.cuda
        if not args.no_bandwidth and torch.cuda.is_available():
            try:
                (facts["pinned_h2d_gbps"], facts["pageable_h2d_gbps"],
                 facts["d2h_pinned_gbps"]) = bandwidth(torch)
            except Exception as exc:  # noqa: BLE001 - report, keep the other facts
                facts["bandwidth_error"] = f"{type(exc).__name__}: {exc}"
                print(f"facts.py: bandwidth failed: {facts['bandwidth_error']}", file=sys.stderr)
    except ImportError:
        pass

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(facts, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
