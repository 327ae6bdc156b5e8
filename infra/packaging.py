"""Stage what each model's function or container is built from, without Docker and without network.

A Lambda zip is a staged directory: the ``functions/`` package, the model's artifact under
``artifacts/<name>/`` (unless it is read from S3 at init) and the runtime dependencies, pre-built for
the function's architecture from ``functions/requirements.lock`` by ``python -m infra.build_deps``
(the only step that needs the network, run before ``cdk synth``): ``build/lambda-deps/<arch>/`` for
every model, plus ``<arch>-image/`` (pillow) for the tasks in :data:`IMAGE_EXTRA_TASKS`. Strict
packaging refuses dependencies whose versions differ from the current lock or that lack Lambda
Python's bytecode. A Docker build context is staged the same way with its Dockerfile from
``docker/`` and the model's part of the lock; the CDK CLI builds it at deploy time, never at synth.
Files are hard-linked when possible, so staging a large model costs no copy.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from functions.contract import Task
from functions.contract.deployment import HANDLERS
from infra import limits, lockfile
from infra.config import ModelSpec
from infra.errors import InfraConfigError
from infra.settings import REPO_ROOT, EnvironmentConfig

FUNCTIONS_DIR = REPO_ROOT / "functions"
PREVIEW_HANDLER = Path(__file__).resolve().parent / "preview" / "handler.py"
DOCKER_DIR = REPO_ROOT / "docker"
REQUIREMENTS = FUNCTIONS_DIR / "requirements.txt"
LOCK = lockfile.LOCK  # functions/requirements.lock
LAMBDA_DOCKERFILE = DOCKER_DIR / "lambda.Dockerfile"
GPU_DOCKERFILE = DOCKER_DIR / "gpu.Dockerfile"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")
ARCHITECTURES = ("arm64", "x86_64")

# Locked distributions no runtime installs, nor whatever only they require (hf-xet, httpx2, pyyaml,
# fsspec, tqdm, click, ...), with the reason.
LEFT_OUT = {
    "boto3": "the Lambda runtime ships the AWS SDK (the GPU image installs its own)",
    "huggingface-hub": "tokenizers imports it only in Tokenizer.from_pretrained; maas calls Tokenizer.from_file",
}
# Extra dependency sets, each built into build/lambda-deps/<arch>-<extra>/ and staged only for its tasks.
EXTRAS: dict[str, tuple[str, ...]] = {"image": ("pillow",)}
# Only image models carry Pillow: the runtime imports a task's pipeline module when a model of that task
# loads (functions.inference.pipelines.pipeline_class), so a text model never imports PIL. Text zips are
# ~22 MiB smaller for it. tests/infra/test_lambda_deps.py fails when this and the runtime's imports disagree.
IMAGE_EXTRA_TASKS: frozenset[str] = frozenset({Task.IMAGE_CLASSIFICATION})


class PackagingError(InfraConfigError):
    """Something a deployable package needs is missing (use ``-c packaging=preview`` to only preview)."""


def dir_size(path: Path) -> int:
    """Total size in bytes of the regular files under ``path`` (symlinks are not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def requirement_lines(text: str) -> list[str]:
    """The requirement specifiers of a requirements file: comments, blank lines and spacing dropped."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return ["".join(line.split()) for line in lines if line]


def extras_for(task: str) -> tuple[str, ...]:
    """The extra dependency sets a model of ``task`` carries beside the base set."""
    return ("image",) if task in IMAGE_EXTRA_TASKS else ()


def dependency_sets(pins: dict[str, lockfile.Pin]) -> dict[str | None, dict[str, lockfile.Pin]]:
    """The base set (key ``None``: what every runtime needs) and each extra's own pins, from the lock."""
    left_out = list(LEFT_OUT)
    extra_names = {canonicalize_name(name) for names in EXTRAS.values() for name in names}
    base = lockfile.select(pins, leave_out=[*left_out, *extra_names])
    sets: dict[str | None, dict[str, lockfile.Pin]] = {None: base}
    for extra in EXTRAS:
        others = [name for other, more in EXTRAS.items() if other != extra for name in more]
        with_extra = lockfile.select(pins, leave_out=[*left_out, *others])
        sets[extra] = {name: pin for name, pin in with_extra.items() if name not in base}
    return sets


def deps_dir(lambda_deps_dir: Path, architecture: str, extra: str | None = None) -> Path:
    """``<lambda_deps_dir>/<arch>/`` (base set) or ``<lambda_deps_dir>/<arch>-<extra>/``."""
    return lambda_deps_dir / (architecture if extra is None else f"{architecture}-{extra}")


def deps_stamp(lambda_deps_dir: Path, architecture: str, extra: str | None = None) -> Path:
    """Where ``infra.build_deps`` records the pins (with hashes) it installed into a dependency directory.

    Next to ``<lambda_deps_dir>/<arch>[-<extra>]/``, not inside it, so it is neither zipped nor measured;
    written last, so a failed build has none.
    """
    return lambda_deps_dir / f"{deps_dir(lambda_deps_dir, architecture, extra).name}.requirements.txt"


def expected_pins(architecture: str, extra: str | None = None, lock: Path = LOCK) -> dict[str, str]:
    """``{name: version}`` a dependency directory must hold: its set of the lock, on Lambda's Python."""
    pins = dependency_sets(lockfile.read_lock(lock))[extra]
    environment = lockfile.lambda_environment(architecture, limits.LAMBDA_PYTHON_VERSION)
    return {name: pin.version for name, pin in pins.items() if pin.applies(environment)}


def installed_pins(deps: Path) -> dict[str, str]:
    """``{name: version}`` of the distributions installed in ``deps`` (their ``*.dist-info``)."""
    found = metadata.distributions(path=[str(deps)])
    return {canonicalize_name(dist.metadata["Name"]): dist.version for dist in found}


def missing_bytecode(deps: Path, python_version: str = limits.LAMBDA_PYTHON_VERSION) -> list[Path]:
    """The ``.py`` files under ``deps`` without a CPython ``python_version`` ``.pyc`` next to them."""
    tag = f"cpython-{python_version.replace('.', '')}"
    return [
        source
        for source in deps.rglob("*.py")
        if not (source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc").is_file()
    ]


def check_deps_current(deps: Path, stamp: Path, lock: Path = LOCK) -> None:
    """Refuse a dependency directory whose versions differ from the lock's, or that lacks its bytecode.

    ``deps`` is named ``<arch>`` or ``<arch>-<extra>`` (see :func:`deps_dir`); ``stamp`` is its record.
    """
    architecture, _, extra = deps.name.partition("-")
    rebuild = f"rebuild them with `python -m infra.build_deps --arch {architecture}`"
    if architecture not in ARCHITECTURES or (extra and extra not in EXTRAS):
        raise PackagingError(f"{deps} is not a dependency directory infra.build_deps writes (<arch>[-<extra>])")
    if not lock.is_file():
        raise PackagingError(f"{lock} is missing: the runtime dependencies cannot be checked or built (`make lock`)")
    if not stamp.is_file():
        raise PackagingError(f"{deps} has no record of the pins it was built from ({stamp}); {rebuild}")
    wanted = expected_pins(architecture, extra or None, lock)
    recorded = {name: pin.version for name, pin in lockfile.read_lock(stamp).items()}
    if recorded != wanted:
        raise PackagingError(f"{deps} was built from another lock than {lock} ({_diff(recorded, wanted)}); {rebuild}")
    installed = installed_pins(deps)
    if installed != recorded:
        raise PackagingError(f"{deps} no longer holds what it was built with ({_diff(installed, recorded)}); {rebuild}")
    unbuilt = missing_bytecode(deps)
    if unbuilt:
        raise PackagingError(
            f"{deps} lacks Python {limits.LAMBDA_PYTHON_VERSION} bytecode for {len(unbuilt)} files "
            f"(e.g. {unbuilt[0].relative_to(deps)}): Lambda's task root is read-only; {rebuild}"
        )


def runtime_bytes_by_arch(env: EnvironmentConfig) -> dict[str, int]:
    """Unzipped size of the runtime dependencies per architecture (base + extras): measured if built, else
    estimated. The largest zip's: every extra counts, whichever tasks carry it."""
    sizes = {}
    for arch in ARCHITECTURES:
        dirs = [deps_dir(env.lambda_deps_dir, arch, extra) for extra in (None, *EXTRAS)]
        measured = sum(dir_size(path) for path in dirs if path.is_dir())
        code = dir_size(FUNCTIONS_DIR) if FUNCTIONS_DIR.is_dir() else 0
        sizes[arch] = (measured or limits.RUNTIME_DEPS_ESTIMATE_BYTES) + code
    return sizes


def _diff(have: dict[str, str], want: dict[str, str]) -> str:
    """``name have -> want`` for each difference, ``-`` for absent."""
    names = sorted(have.keys() | want.keys())
    return ", ".join(f"{n} {have.get(n, '-')} -> {want.get(n, '-')}" for n in names if have.get(n) != want.get(n))


def stage_lambda_zip(spec: ModelSpec, env: EnvironmentConfig, *, architecture: str) -> Path:
    """Stage the zip contents for a Lambda model; returns the directory to use as the code asset.

    Strict packaging stages the runtime, its dependencies (checked against the lock) and the model. A preview
    stages :data:`PREVIEW_HANDLER` under every handler path instead: deployed by mistake, it refuses every
    call with a message that says how to deploy for real, rather than crashing on a missing import.
    """
    out = _fresh(env.staging_dir / env.stage / spec.name / "zip")
    if env.packaging == "preview":
        return _stage_preview(out)
    for extra in (None, *extras_for(spec.task)):
        deps = deps_dir(env.lambda_deps_dir, architecture, extra)
        if deps.is_dir() and any(deps.iterdir()):
            if env.packaging == "strict":
                check_deps_current(deps, deps_stamp(env.lambda_deps_dir, architecture, extra))
            _link_tree(deps, out, keep_bytecode=True)  # Lambda's task root is read-only: ship the .pyc
        elif env.packaging == "strict":
            raise PackagingError(
                f"model {spec.name!r}: no runtime dependencies for {architecture} in {deps}. Build them with "
                f"`python -m infra.build_deps --arch {architecture}` (see docs/infra.md), or preview the "
                f"infrastructure without them with -c packaging=preview"
            )
    _link_tree(FUNCTIONS_DIR, out / "functions")
    compile_runtime(out / "functions")
    _stage_artifact(spec, env, out)
    return out


# What the API authorizer's zip holds: its handler's import closure, standard library and boto3 aside (the bundle
# test runs it from the zip with nothing else on sys.path, so a module missing here fails there).
AUTHORIZER_MODULES = (
    "__init__.py",
    "handlers/__init__.py",
    "handlers/authorizer.py",
    "web/__init__.py",
    "web/api_keys.py",
)


def stage_authorizer_zip(env: EnvironmentConfig) -> Path:
    """Stage the API authorizer's zip: a few maas modules, no third-party package (its handler needs only the
    standard library and the boto3 the Lambda runtime provides), compiled by Lambda's Python when strict. A preview
    stages the same code: it needs neither dependencies nor a model."""
    out = _fresh(env.staging_dir / env.stage / "_authorizer" / "zip")
    for module in AUTHORIZER_MODULES:
        target = out / "functions" / module
        target.parent.mkdir(parents=True, exist_ok=True)
        _link(FUNCTIONS_DIR / module, target)
    if env.packaging == "strict":
        compile_runtime(out / "functions")
    return out


def compile_runtime(functions_dir: Path) -> None:
    """Precompile the staged runtime with Lambda's Python (unchecked-hash bytecode: valid whatever the file times
    after unzipping), as the dependencies are: Lambda's task root is read-only, so a module without bytecode is
    compiled again at every cold start."""
    python = lambda_python()
    command = [str(python), "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash"]
    command += ["-s", str(functions_dir.parent), "-p", "/var/task", str(functions_dir)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    except subprocess.CalledProcessError as exc:
        raise PackagingError(f"compiling {functions_dir} with {python} failed: {exc.stderr[-2000:]}") from exc


def _stage_preview(out: Path) -> Path:
    handlers = out / "functions" / "handlers"
    handlers.mkdir(parents=True)
    for package in (out / "functions", handlers):
        (package / "__init__.py").write_text('"""maas preview deployment: no runtime here."""\n')
    for module in {path.rsplit(".", 2)[1] for path in HANDLERS.values()}:
        shutil.copyfile(PREVIEW_HANDLER, handlers / f"{module}.py")
    return out


def stage_docker_context(spec: ModelSpec, env: EnvironmentConfig, *, dockerfile: Path) -> Path:
    """Stage a minimal Docker build context: Dockerfile, the model's part of the lock, ``constraints.txt`` (the
    whole lock without hashes, for the packages an image adds beyond it: the GPU server's onnxruntime-gpu and
    uvicorn, the streaming Lambda image's uvicorn), ``functions/`` and the artifact. A ``gpu`` model's lock leaves
    onnxruntime out (its image installs onnxruntime-gpu)."""
    out = _fresh(env.staging_dir / env.stage / spec.name / "image")
    shutil.copy2(dockerfile, out / "Dockerfile")
    # The lock is source, not a build output: required in preview too.
    if not LOCK.is_file():
        raise PackagingError(f"model {spec.name!r}: {LOCK} is missing (`make lock`); the image cannot be built")
    pins = lockfile.read_lock(LOCK)
    gpu = spec.target == "gpu"
    sets = dependency_sets(lockfile.select(pins, leave_out=["onnxruntime"]) if gpu else pins)
    wanted = [pin for extra in (None, *extras_for(spec.task)) for pin in sets[extra].values()]
    (out / "requirements.lock").write_text(lockfile.render(wanted), encoding="utf-8")
    (out / "constraints.txt").write_text(lockfile.constraints(pins.values()), encoding="utf-8")
    _link_tree(FUNCTIONS_DIR, out / "functions")
    (out / "artifacts" / spec.name).mkdir(parents=True, exist_ok=True)
    _stage_artifact(spec, env, out)
    return out


def _stage_artifact(spec: ModelSpec, env: EnvironmentConfig, out: Path) -> None:
    """Copy the artifact into ``<out>/artifacts/<name>/`` when the model ships inside the package."""
    bundled = getattr(spec.deploy, "model_source", "bundled") == "bundled"
    if not bundled or not spec.artifact.built:
        return
    target = out / "artifacts" / spec.name
    target.mkdir(parents=True, exist_ok=True)
    for name in [*spec.artifact.files, "manifest.json"]:
        source = spec.artifact.directory / name
        if source.is_file():
            _link(source, target / name)
        elif env.packaging == "strict":
            raise PackagingError(
                f"model {spec.name!r}: the manifest lists {name} but {source} does not exist; rebuild the "
                f"model or preview with -c packaging=preview"
            )


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _link(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, dest)


def _link_tree(source: Path, dest: Path, *, keep_bytecode: bool = False) -> None:
    if not source.is_dir():
        raise PackagingError(f"{source} does not exist")

    def copy(src: str, dst: str) -> None:
        _link(Path(src), Path(dst))

    shutil.copytree(source, dest, ignore=None if keep_bytecode else _IGNORED, copy_function=copy, dirs_exist_ok=True)


LAMBDA_PYTHON_ENV = "MAAS_LAMBDA_PYTHON"


def lambda_python(explicit: Path | None = None) -> Path:
    """The CPython ``limits.LAMBDA_PYTHON_VERSION`` interpreter that compiles the bytecode.

    ``explicit``, else ``$MAAS_LAMBDA_PYTHON``, else ``python3.13`` on PATH, else pyenv's newest 3.13.
    """
    chosen = explicit or (Path(os.environ[LAMBDA_PYTHON_ENV]) if os.environ.get(LAMBDA_PYTHON_ENV) else None)
    if chosen is not None:
        version = _python_version(chosen)
        if version != limits.LAMBDA_PYTHON_VERSION:
            raise PackagingError(
                f"{chosen} is {f'Python {version}' if version else 'not a runnable CPython'}, not CPython "
                f"{limits.LAMBDA_PYTHON_VERSION}: Lambda would ignore its bytecode. Point --lambda-python or "
                f"${LAMBDA_PYTHON_ENV} at a python{limits.LAMBDA_PYTHON_VERSION}"
            )
        return chosen
    on_path = shutil.which(f"python{limits.LAMBDA_PYTHON_VERSION}")
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    pattern = str(pyenv / f"{limits.LAMBDA_PYTHON_VERSION}.*" / "bin" / f"python{limits.LAMBDA_PYTHON_VERSION}")
    found = ([on_path] if on_path else []) + sorted(glob.glob(pattern), reverse=True)
    for candidate in map(Path, found):
        if _python_version(candidate) == limits.LAMBDA_PYTHON_VERSION:
            return candidate
    raise PackagingError(
        f"no CPython {limits.LAMBDA_PYTHON_VERSION} (infra.limits.LAMBDA_PYTHON_VERSION, Lambda's Python) found to "
        f"precompile the dependencies: install it (e.g. `pyenv install {limits.LAMBDA_PYTHON_VERSION}`) or pass its "
        f"path with --lambda-python or ${LAMBDA_PYTHON_ENV}"
    )


def _python_version(python: Path) -> str | None:
    """``major.minor`` of a CPython interpreter, or None when it does not run or is another implementation."""
    probe = "import sys; print(sys.implementation.name, '%d.%d' % sys.version_info[:2])"
    try:
        result = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    name, _, version = result.stdout.strip().partition(" ")
    return version if name == "cpython" else None
