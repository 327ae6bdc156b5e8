"""Run a built Lambda code asset the way the Python runtime does, on this machine.

- :func:`unzip_asset` zips a synthesized asset directory (what ``cdk deploy`` uploads) and extracts it, so the
  files get fresh timestamps, as on Lambda.
- :func:`run_bundle` runs one function from that task root in a fresh CPython of Lambda's version with ``-I -S``
  (no site-packages, no user environment), with only the task root and the runtime-provided boto3 on
  ``sys.path``, as an unprivileged user, the task root mounted read-only at ``/var/task`` in a private mount
  namespace (the paths the template's environment names then exist, and nothing can be written there),
  with exactly the environment it is given. It imports the handler (Lambda's init phase), invokes it with
  each event, and reports the responses, the timings and every top-level module imported.

Used by the bundle tests (tests/bundle/) and the cold-start benchmark (``maas bench minilm-embed``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK_ROOT = "/var/task"
RUNTIME_DIR = "/var/runtime"  # where the managed runtime keeps boto3
LANG_DIR = "/var/lang"  # where Lambda's Python lives: the interpreter is mounted there, read-only
LAMBDA_UID = 993  # an unprivileged user, as Lambda's sandbox user is
# What the managed Python runtime provides beside the function's code: the AWS SDK and what it needs.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")

_RUNNER = r"""
import importlib, json, os, resource, sys, time

started = time.perf_counter()
module_name, _, attribute = os.environ["_HANDLER"].rpartition(".")
handler = getattr(importlib.import_module(module_name), attribute)
init_s = time.perf_counter() - started
try:
    from functions.context import DeadlineContext
except ImportError:  # a bundle without the runtime (the API's authorizer): a plain context of the same shape
    class DeadlineContext:
        def __init__(self, timeout_s, function_name, memory_limit_in_mb):
            self._deadline, self.function_name = time.monotonic() + timeout_s, function_name
            self.memory_limit_in_mb, self.aws_request_id = memory_limit_in_mb, "probe-%d" % time.time_ns()
            self.function_version, self.log_group_name, self.log_stream_name = "$LATEST", "/aws/lambda/probe", "p"
            self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + function_name

        def get_remaining_time_in_millis(self):
            return max(0, int((self._deadline - time.monotonic()) * 1000))

results = []
with open(sys.argv[1], encoding="utf-8") as handle:
    events = json.load(handle)
for event in events:
    begun = time.perf_counter()
    context = DeadlineContext(float(os.environ.get("MAAS_PROBE_TIMEOUT_S", "30")),
                              function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "maas-probe"),
                              memory_limit_in_mb=int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")))
    try:
        response = handler(event, context)
        results.append({"ok": True, "response": response, "seconds": time.perf_counter() - begun,
                        "done_at": time.time()})
    except Exception as exc:
        results.append({"ok": False, "error": type(exc).__name__, "message": str(exc)[:2000],
                        "seconds": time.perf_counter() - begun, "done_at": time.time()})
import_failures = {}
if os.environ.get("_MAAS_IMPORT_ALL"):  # every module of a package, as found in the bundle
    import pkgutil
    package = importlib.import_module(os.environ["_MAAS_IMPORT_ALL"])
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            import_failures[info.name] = f"{type(exc).__name__}: {exc}"
report = {
    "import_failures": import_failures,
    "init_s": init_s,
    "results": results,
    "modules": sorted({name.partition(".")[0] for name in sys.modules}),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
with open(sys.argv[2], "w", encoding="utf-8") as handle:
    json.dump(report, handle, default=str)
"""


class BundleRunError(RuntimeError):
    """The function could not be run at all (its process failed before reporting)."""


@dataclass(frozen=True)
class BundleRun:
    init_s: float  # importing the handler module: Lambda's init phase
    results: list[dict[str, Any]]  # one per event: {"ok", "response" | "error", "message", "seconds"}
    import_failures: dict[str, str]  # with ``import_all``: each module of the package that failed to import
    modules: set[str]  # every top-level module the process imported
    peak_rss_mb: float
    process_s: float  # from spawning the process to its exit
    first_response_s: float | None  # from spawning the process to the first response: what a cold caller waits
    stderr: str


def unzip_asset(asset_dir: Path, out: Path) -> Path:
    """Zip ``asset_dir`` as ``cdk deploy`` uploads it and extract it into ``out``; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o755)
    archive = out.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as handle:
        for path in sorted(asset_dir.rglob("*")):
            if path.is_file():
                handle.write(path, path.relative_to(asset_dir))
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(out)
    archive.unlink()
    for path in out.rglob("*"):  # extracted files keep no write bits beyond the owner's; others may read
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def runtime_provided_dir(out: Path, site_packages: Path) -> Path:
    """A copy of boto3 and what it needs (pure Python) from ``site_packages``: what the managed runtime provides."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PROVIDED:
        source = site_packages / name
        if source.is_dir():
            shutil.copytree(source, out / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            shutil.copy2(source, out / name)
    for path in (out, *out.rglob("*")):  # readable by the unprivileged user that runs the function
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def can_isolate() -> bool:
    """Whether this machine lets a test mount a read-only /var/task in a private namespace (root, unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True, timeout=30
    )
    return probe.returncode == 0


# LD_LIBRARY_PATH as Lambda sets it (its Python is a shared build under /var/lang too)
_LIBRARY_PATH = (
    f"{LANG_DIR}/lib",
    "/lib64",
    "/usr/lib64",
    RUNTIME_DIR,
    f"{RUNTIME_DIR}/lib",
    TASK_ROOT,
    f"{TASK_ROOT}/lib",
)


def sandbox(
    task_root: Path,
    *,
    python: Path,
    code: str,
    args: list[str],
    environment: dict[str, str],
    runtime_dir: Path | None = None,
    flags: str = "-I -S",
    emulator: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run Python ``code`` (with ``args``) as Lambda's runtime would: ``task_root``
    read-only at /var/task, Lambda's Python at /var/lang, the runtime's boto3 at /var/runtime, ``-I -S`` with only
    those on ``sys.path``, as an unprivileged user, in a private mount namespace, with ``environment`` on top of
    Lambda's own variables."""
    prefix = python.resolve().parent.parent  # <prefix>/bin/python3.x
    mounts = [f"mkdir -p {TASK_ROOT} && mount --bind {task_root} {TASK_ROOT}"]
    mounts.append(f"mount -o remount,ro,bind {TASK_ROOT}")
    mounts.append(f"mkdir -p {LANG_DIR} && mount --bind {prefix} {LANG_DIR}")
    mounts.append(f"mount -o remount,ro,bind {LANG_DIR}")
    python_path = [TASK_ROOT]
    if runtime_dir is not None:
        mounts.append(f"mkdir -p {RUNTIME_DIR} && mount --bind {runtime_dir} {RUNTIME_DIR}")
        mounts.append(f"mount -o remount,ro,bind {RUNTIME_DIR}")
        python_path.append(RUNTIME_DIR)
    interpreter = f"{LANG_DIR}/bin/{python.resolve().name}"
    program = f"import sys; sys.path[:0] = {python_path!r}; {code}"
    inner = " ".join([*map(_quote, emulator), interpreter, flags, "-c", _quote(program), *map(_quote, args)])
    drop = f"setpriv --reuid={LAMBDA_UID} --regid={LAMBDA_UID} --clear-groups -- sh -c {_quote(inner)}"
    script = " && ".join([*mounts, f"cd / && exec {drop}"])
    env = {
        "PATH": "/usr/bin:/bin",
        "LAMBDA_TASK_ROOT": TASK_ROOT,
        "TZ": ":UTC",
        "LD_LIBRARY_PATH": ":".join(_LIBRARY_PATH),
        "LANG": "en_US.UTF-8",
        **environment,
    }
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script], env


def run_bundle(
    task_root: Path,
    *,
    python: Path,
    handler: str,
    environment: dict[str, str],
    events: list[Any],
    runtime_dir: Path | None = None,
    verbose_imports: bool = False,
    import_all: str | None = None,
    timeout_s: float = 600,
    emulator: Sequence[str] = (),
) -> BundleRun:
    """Run ``handler`` from ``task_root`` mounted read-only at /var/task, invoking it with each of ``events``.

    ``import_all``: then import every module of that package, as the bundle holds it, and report failures."""
    import time

    work = Path(tempfile.mkdtemp(prefix="maas-bundle-"))
    work.chmod(0o777)
    try:
        (work / "runner.py").write_text(_RUNNER, encoding="utf-8")
        (work / "events.json").write_text(json.dumps(events), encoding="utf-8")
        for path in work.iterdir():
            path.chmod(0o644)
        report = work / "report.json"
        environment_for_runner = {"_HANDLER": handler, **environment}
        if import_all:
            environment_for_runner["_MAAS_IMPORT_ALL"] = import_all
        command, env = sandbox(
            task_root,
            python=python,
            code=f"sys.argv = ['runner'] + sys.argv[1:]; exec(open('{work}/runner.py').read())",
            args=[str(work / "events.json"), str(report)],
            environment=environment_for_runner,
            runtime_dir=runtime_dir,
            flags="-I -S" + (" -v" if verbose_imports else ""),
            emulator=emulator,
        )
        started, spawned_at = time.perf_counter(), time.time()
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        elapsed = time.perf_counter() - started
        if run.returncode != 0 or not report.is_file():
            raise BundleRunError(f"{handler} from {task_root} exited {run.returncode}:\n{run.stderr[-4000:]}")
        data = json.loads(report.read_text(encoding="utf-8"))
        return BundleRun(
            init_s=float(data["init_s"]),
            results=list(data["results"]),
            import_failures=dict(data["import_failures"]),
            modules=set(data["modules"]),
            peak_rss_mb=float(data["peak_rss_mb"]),
            process_s=elapsed,
            first_response_s=(data["results"][0]["done_at"] - spawned_at) if data["results"] else None,
            stderr=run.stderr,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
