"""What every bench script shares: the machine line, the common options, scratch folders, writing JSON and Markdown."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def scratch(prefix: str) -> str:
    """A temporary folder for one measurement's workdir, removed when the script ends (each holds tens of MB)."""
    from pipeline.files import process_folder

    return str(process_folder(prefix))


def machine() -> str:
    return f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs"


def parser(doc: str, name: str) -> argparse.ArgumentParser:
    """An argument parser with the options every bench has: --quick and --out."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run (tests)")
    p.add_argument("--out", default=str(RESULTS), help=f"folder for {name}.json and {name}.md")
    return p


def publish(out: str | Path, name: str, results: dict, markdown: str) -> None:
    """Write <out>/<name>.json and <out>/<name>.md, and print the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2))
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
