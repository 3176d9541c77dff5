"""Builds the release binary the way deploy/Dockerfile does, then runs it.

No Docker engine is needed (this project's machines have none): the
script reads the Dockerfile, takes the `cargo build` command of its builder
stage (flags, profile and features exactly as written, with the builder
stage's ENV), runs it from the repository root, and checks that

- the binary the command produces is the one the runtime stage copies, at
  the path ENTRYPOINT runs;
- `tracemap --version` names the Cargo.toml version;
- `tracemap check-config` accepts the image's default config, which is the
  file TRACEMAP_CONFIG points at;
- the binary starts on that config (listeners moved to 127.0.0.1:0 and a
  temporary data dir), answers /readyz with 200, and exits 0 on SIGTERM;
- the runtime stage runs as a numeric non-root USER and EXPOSEs exactly the
  documented ports;
- hadolint (when given with --hadolint) finds nothing.

If a Docker engine answers `docker info`, the image is also built with
`docker build`; otherwise that step is skipped and says so.

Usage: python dockerfile_build.py [--hadolint PATH] [--skip-build]
Exit status 0 only if every check passed; prints "N passed, N failed".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
EXPECTED_EXPOSE = {"4317/tcp", "4318/tcp", "2000/udp", "8080/tcp"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(text: str) -> list[dict]:
    """Build stages: {'from', 'name', 'instructions'}; ARG defaults substituted in FROM."""
    args: dict[str, str] = {}
    result: list[dict] = []
    for word, rest in instructions(text):
        if word == "ARG" and not result:
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            result.append({"from": image, "name": name, "instructions": []})
        else:
            result[-1]["instructions"].append((word, rest))
    return result


def run_flags_stripped(rest: str) -> str:
    """A RUN's shell command without its --mount/--network/--security flags."""
    tokens = rest.split(" ")
    while tokens and tokens[0].startswith("--"):
        tokens.pop(0)
        while tokens and tokens[0] == "":
            tokens.pop(0)
    return " ".join(tokens).strip()


def cargo_build_command(builder: dict) -> list[str]:
    commands = []
    for word, rest in builder["instructions"]:
        if word != "RUN":
            continue
        for part in run_flags_stripped(rest).split("&&"):
            argv = shlex.split(part)
            if argv[:2] == ["cargo", "build"]:
                commands.append(argv)
    if len(commands) != 1:
        raise SystemExit(f"expected one `cargo build` in the builder stage, found {commands}")
    return commands[0]


def profile_dir(argv: list[str]) -> str:
    if "--profile" in argv:
        profile = argv[argv.index("--profile") + 1]
        return "debug" if profile == "dev" else profile
    return "release" if "--release" in argv else "debug"


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok: {what}")
        else:
            self.failed += 1
            print(f"FAILED: {what}{': ' + detail if detail else ''}")
        return ok


def start_and_probe(binary: Path, config: Path, checks: Checks) -> None:
    """Runs the binary on the image's default config with local listeners; /readyz; SIGTERM."""
    with tempfile.TemporaryDirectory() as data_dir:
        env = dict(os.environ, TRACEMAP_CONFIG=str(config))
        proc = subprocess.Popen(
            [str(binary), "run", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--api-listen", "127.0.0.1:0", "--data-dir", data_dir],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            api = None
            deadline = time.monotonic() + 30
            assert proc.stderr is not None
            while api is None and time.monotonic() < deadline:
                line = proc.stderr.readline()
                if not line:
                    break
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                fields = record.get("fields", record)
                if fields.get("message") == "listening" and fields.get("component") == "api":
                    api = fields.get("addr")
            if not checks.check(api is not None, "the binary starts on the image's default config (JSON logs)",
                                f"exit status {proc.poll()}"):
                return
            with urllib.request.urlopen(f"http://{api}/readyz", timeout=5) as response:
                checks.check(response.status == 200, "/readyz answers 200", str(response.status))
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(timeout=30)
            checks.check(status == 0, "SIGTERM stops it with exit status 0", str(status))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hadolint", help="hadolint binary; lint the Dockerfile with it")
    parser.add_argument("--skip-build", action="store_true",
                        help="check the binary an earlier run built (the build command still comes from the Dockerfile)")
    args = parser.parse_args()
    checks = Checks()

    text = DOCKERFILE.read_text()
    all_stages = stages(text)
    builders = [s for s in all_stages if s["name"] == "builder"]
    runtime = all_stages[-1]
    if not checks.check(len(builders) == 1 and runtime["name"] is None, "multi-stage: a `builder` stage and an unnamed final stage"):
        return 1
    builder = builders[0]

    argv = cargo_build_command(builder)
    checks.check("--release" in argv or "--profile" in argv, "the build is an optimised profile", " ".join(argv))
    checks.check("--locked" in argv, "the build uses Cargo.lock as committed (--locked)", " ".join(argv))
    env = dict(os.environ)
    for word, rest in builder["instructions"]:
        if word == "ENV":
            for assignment in shlex.split(rest):
                key, _, value = assignment.partition("=")
                env[key] = value
    binary_rel = f"target/{profile_dir(argv)}/tracemap"
    if args.skip_build:
        print(f"(not building: --skip-build; the Dockerfile's command is: {shlex.join(argv)})")
    else:
        print(f"running the Dockerfile's build command: {shlex.join(argv)}", flush=True)
        # nice only lowers the priority on a shared machine; the command is the Dockerfile's.
        build = subprocess.run(["nice", "-n", "10", *argv], cwd=REPO, env=env)
        if not checks.check(build.returncode == 0, "the Dockerfile's cargo build succeeds", f"exit {build.returncode}"):
            print(f"dockerfile: {checks.passed} passed, {checks.failed} failed")
            return 1

    # The binary the command produced is the one the image ships and runs.
    runtime_copies = [rest for word, rest in runtime["instructions"] if word == "COPY"]
    builder_moves = " ".join(rest for word, rest in builder["instructions"] if word == "RUN")
    moved = re.search(r"install\s+(?:-\S+\s+)*(?:\d+\s+)?" + re.escape(binary_rel) + r"\s+(\S+)", builder_moves)
    checks.check(moved is not None, f"the builder stage takes {binary_rel}, the path its cargo build writes",
                 builder_moves)
    entrypoint = next((json.loads(rest) for word, rest in runtime["instructions"] if word == "ENTRYPOINT"), None)
    shipped = None
    if moved:
        for rest in runtime_copies:
            parts = [p for p in rest.split() if not p.startswith("--")]
            if "--from=builder" in rest and parts[0] == moved.group(1):
                shipped = parts[1]
    checks.check(shipped is not None and entrypoint is not None and entrypoint[0] == shipped,
                 "ENTRYPOINT runs the copied binary", f"copied to {shipped}, ENTRYPOINT {entrypoint}")

    binary = REPO / binary_rel
    if not checks.check(binary.is_file(), f"{binary_rel} exists"):
        print(f"dockerfile: {checks.passed} passed, {checks.failed} failed")
        return 1
    version = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    checks.check(out.returncode == 0 and out.stdout.strip() == f"tracemap {version}",
                 f"`tracemap --version` prints tracemap {version}", out.stdout + out.stderr)

    # The default config: copied in, pointed at by TRACEMAP_CONFIG, valid.
    config_env = None
    for word, rest in runtime["instructions"]:
        if word == "ENV":
            for assignment in shlex.split(rest):
                key, _, value = assignment.partition("=")
                if key == "TRACEMAP_CONFIG":
                    config_env = value
    config_src = None
    for rest in runtime_copies:
        parts = [p for p in rest.split() if not p.startswith("--")]
        if "--from" not in rest and parts[1] == config_env:
            config_src = REPO / parts[0]
    if checks.check(config_src is not None and config_src.is_file(),
                    "TRACEMAP_CONFIG names the default config the image copies in", f"{config_env}"):
        out = subprocess.run([str(binary), "check-config", str(config_src)], capture_output=True, text=True)
        checks.check(out.returncode == 0, f"`tracemap check-config {config_src.relative_to(REPO)}` passes",
                     out.stdout + out.stderr)
        start_and_probe(binary, config_src, checks)

    # Runtime user and ports.
    user = next((rest for word, rest in runtime["instructions"] if word == "USER"), "")
    uid = user.split(":")[0]
    checks.check(uid.isdigit() and int(uid) != 0, "USER is a numeric non-root uid (runAsNonRoot can verify it)", user)
    exposed = set()
    for word, rest in runtime["instructions"]:
        if word == "EXPOSE":
            exposed |= {p if "/" in p else f"{p}/tcp" for p in rest.split()}
    checks.check(exposed == EXPECTED_EXPOSE, "EXPOSE is OTLP 4317/4318, X-Ray 2000/udp and the API 8080",
                 str(sorted(exposed)))
    checks.check(runtime["from"].startswith("gcr.io/distroless/"), "the runtime image is distroless", runtime["from"])

    if args.hadolint:
        lint = subprocess.run([args.hadolint, str(DOCKERFILE)], capture_output=True, text=True)
        checks.check(lint.returncode == 0, "hadolint finds nothing", lint.stdout + lint.stderr)

    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        build = subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", f"tracemap:{version}", str(REPO)])
        checks.check(build.returncode == 0, "docker build succeeds")
    else:
        print("SKIPPED: docker build (no Docker engine answers `docker info`); "
              "the cargo build above is the command it runs")

    print(f"dockerfile: {checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
