"""Writes benchmark tables into docs/benchmarks.md, one section per benchmark, with the machine."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
DOC = os.path.join(REPO, "docs", "benchmarks.md")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    versions = ", ".join(f"{label} {_version(package)}" for label, package in (
        ("TensorFlow", "tensorflow"), ("Keras", "keras"), ("JAX", "jax"), ("PyTorch", "torch"))
        if _version(package))
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}, {gpu() or 'no GPU'}; "
            f"Python {platform.python_version()}, {versions}")


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def gpu() -> str:
    """The GPUs nvidia-smi lists (names, comma-separated), or ''."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return ", ".join(line.strip() for line in done.stdout.splitlines() if line.strip())


def write_section(title: str, body: str, argv, doc: str = DOC) -> None:
    """Replaces (or appends) the section ``## title`` of ``doc`` (docs/benchmarks.md)."""
    os.makedirs(os.path.dirname(doc), exist_ok=True)
    text = open(doc).read() if os.path.exists(doc) else (
        "# Benchmarks\n\nWritten by the scripts in `benchmarks/`; each section says the machine "
        "and command that produced it.\n")
    command = "python " + " ".join(os.path.relpath(argv[0], REPO) if i == 0 else a
                                   for i, a in enumerate(argv))
    section = (f"## {title}\n\nMachine: {machine()}.  \nCommand: `{command}` "
               f"({datetime.date.today().isoformat()}).\n\n{body}\n")
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda m: section + "\n", text) if pattern.search(text) else (
        text.rstrip("\n") + "\n\n" + section)
    from kperceptual.imaging import files

    files.write_atomically(doc, (text.rstrip("\n") + "\n").encode("utf-8"), overwrite=True)


def median_seconds(fn, batch, runs: int, warmup: int = 2) -> float:
    """Median wall-clock seconds of ``fn(batch)`` over ``runs`` calls, after ``warmup`` calls
    (compilation, allocation)."""
    for _ in range(warmup):
        fn(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))
