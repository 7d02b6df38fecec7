"""
What the studies under docs/ share: the repository's modules on the import path, and the machine's name for
each result line. A study imports it before the repository's modules:

    import study  # noqa: F401  (the repository on the import path)
    import mav

Held-out clips, as each stage meets them, are evaluate.py's `held_out_clips`.
"""
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, ROOT):  # a study run as `python docs/<study>.py` has docs/ on the path already
    if path not in sys.path:
        sys.path.insert(0, path)


def machine() -> str:
    """The CPU's model name, its cores and whether it computes bf16 natively: the row's machine."""
    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor())
    bf16 = "avx512_bf16" in info or "amx_bf16" in info
    return f"{name}, {os.cpu_count()} cores, {'bf16' if bf16 else 'no bf16'}"
