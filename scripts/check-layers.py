#!/usr/bin/env python3
"""Fails when a collector module imports from a layer after its own.

The layers follow the data flow (STYLE.md): a module may name modules of
its own layer or earlier ones, never later ones. The collector library must
not use the CLI's client crates either. Unit tests (a `tests.rs` file, or a
`#[cfg(test)] mod` at the end of a file) may use later layers to check what
users see, such as the API document a stored window turns into: they are
not part of the library.
"""
import pathlib
import re
import sys

# Earlier layers first; modules on one line share a layer.
LAYERS = [
    ["validate", "model", "otlp", "shutdown"],
    ["receiver"],
    ["pipeline"],
    ["graph"],
    ["exporter"],
    ["store"],
    ["web"],
    ["config", "telemetry"],
    ["app"],
]
RANK = {module: rank for rank, modules in enumerate(LAYERS) for module in modules}
# Clients of the collector (tracemap map, loadgen, demo) live in src/cli/.
CLIENT_ONLY = re.compile(r"\b(reqwest|opentelemetry_sdk|opentelemetry_otlp)\b")
IMPORT = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")

src = pathlib.Path(__file__).resolve().parent.parent / "src"
problems = []
for path in sorted(src.rglob("*.rs")):
    rel = path.relative_to(src)
    if rel.parts[0] == "cli" or rel.name in ("main.rs", "lib.rs"):
        continue
    module = rel.parts[0].removesuffix(".rs")
    if module not in RANK:
        problems.append(f"src/{rel}: module {module!r} is in no layer of scripts/check-layers.py")
        continue
    if rel.name == "tests.rs":
        continue
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if line.strip() == "#[cfg(test)]" and number < len(lines) and "mod " in lines[number]:
            break
        code = line.split("//", 1)[0]
        for target in IMPORT.findall(code):
            if target in RANK and RANK[target] > RANK[module]:
                problems.append(
                    f"src/{rel}:{number}: {module} imports crate::{target}, a later layer"
                )
        if CLIENT_ONLY.search(code):
            problems.append(f"src/{rel}:{number}: the collector uses a CLI-only crate: {code.strip()}")

if problems:
    print("layer check failed:", *problems, sep="\n  ")
    sys.exit(1)
print(f"layer check passed: {sum(1 for _ in src.rglob('*.rs'))} files, layers {' -> '.join('/'.join(l) for l in LAYERS)}")
