"""Deployment files in infra/ agree with the code: the Dockerfile's COPY sources and build
context, the CronJob's command line and credentials wiring, the crontab example, and the
nightly wrapper script (run for real against a stand-in job: exit codes, messages, the lock)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml
from apache_beam.runners.runner import PipelineRunner

from semq_transforms.config import load_config

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "Dockerfile"
DOCKERIGNORE = INFRA / "Dockerfile.dockerignore"
CRONJOB = INFRA / "schedules" / "cronjob.yaml"
CRONTAB = INFRA / "schedules" / "crontab.example"
WRAPPER = INFRA / "schedules" / "run-nightly.sh"
ENTRYPOINT = ["python", "-m", "pipelines.ingest"]
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
ENV_REF = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")

BASH = shutil.which("bash")
FLOCK = shutil.which("flock")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash not found")
needs_flock = pytest.mark.skipif(BASH is None or FLOCK is None, reason="bash or flock not found")


# --- Dockerfile -------------------------------------------------------------------------------

def dockerfile_stages() -> list[dict]:
    """[{"from": image, "name": alias, "instructions": [(KEYWORD, rest), ...]}] in order."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "Dockerfile ends inside a line continuation"
    stages: list[dict] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append({"from": parts[0], "name": alias, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, rest))
        else:
            assert keyword == "ARG", f"only ARG may come before the first FROM, got {line!r}"
    return stages


def stage(name: str) -> dict:
    matches = [s for s in dockerfile_stages() if s["name"] == name]
    assert len(matches) == 1, f"expected one stage named {name!r}"
    return matches[0]


def instructions(st: dict, keyword: str) -> list[str]:
    return [rest for kw, rest in st["instructions"] if kw == keyword]


def split_args(rest: str) -> tuple[list[str], list[str]]:
    """(flags, operands) of a COPY-like instruction, shell or JSON form."""
    flags, tail = [], rest
    while tail.startswith("--"):
        flag, _, tail = tail.partition(" ")
        flags.append(flag)
        tail = tail.strip()
    operands = json.loads(tail) if tail.startswith("[") else shlex.split(tail)
    return flags, operands


def context_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY that reads from the build context."""
    copies = []
    for st in dockerfile_stages():
        for rest in instructions(st, "COPY"):
            flags, operands = split_args(rest)
            if any(f.startswith("--from=") for f in flags):
                continue
            copies.append((operands[:-1], operands[-1]))
    return copies


def exec_form(rest: str) -> list[str]:
    assert rest.startswith("["), f"use the exec (JSON) form, got {rest!r}"
    return json.loads(rest)


def launcher_user() -> tuple[int, int]:
    (user,) = instructions(dockerfile_stages()[-1], "USER")
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def test_dockerfile_copies_only_existing_repo_paths():
    copies = context_copies()
    assert copies, "the Dockerfile copies nothing from the build context"
    assert not any(kw == "ADD" for st in dockerfile_stages() for kw, _ in st["instructions"])
    for sources, _ in copies:
        for src in sources:
            assert not any(ch in src for ch in "*?["), f"no globs in COPY sources: {src}"
            path = ROOT / src
            assert path.exists(), f"infra/Dockerfile copies {src}, which is not in the repo"
            assert ".." not in PurePosixPath(src).parts
    sources = {PurePosixPath(src).as_posix().rstrip("/") for srcs, _ in copies for src in srcs}
    # The data folder and tests never go into the image.
    assert not sources & {"data", "tests", ".", "benchmarks"}


def test_dockerignore_allowlist_matches_the_copies():
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] in ("*", "**"), "the ignore file must start by excluding everything"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = {src.rstrip("/") for srcs, _ in context_copies() for src in srcs}
    assert copied <= allowed, f"copied but excluded from the context: {copied - allowed}"
    assert allowed <= copied, f"sent in the context but never copied: {allowed - copied}"


def test_dockerfile_installs_the_packaged_project():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    # `pip install .` must install both, so `python -m pipelines.ingest` needs no PYTHONPATH.
    assert "pipelines*" in include and "semq_transforms*" in include
    base = stage("base")
    assert base["from"] == "python:3.11-slim"
    runs = " ".join(instructions(base, "RUN"))
    assert "pip install --no-cache-dir" in runs
    # The directory pip installs holds pyproject.toml, its readme and both packages.
    (src_dir,) = set(re.findall(r"(/tmp/src)\b", runs))
    copied = {f"{dest.rstrip('/')}/{Path(s).name}" if dest.endswith("/") else dest: s
              for srcs, dest in context_copies() for s in srcs}
    readme = pyproject["project"]["readme"]
    for name in ("pyproject.toml", readme, "semq_transforms", "pipelines"):
        assert copied.get(f"{src_dir}/{name}") == name, f"{name} is not copied to {src_dir}"
    # Any extras named must exist in pyproject (there are no gcs/s3 extras today).
    extras = set(pyproject["project"].get("optional-dependencies", {}))
    for group in re.findall(r"\[([A-Za-z0-9_,\- ]+)\]", runs):
        assert {e.strip() for e in group.split(",")} <= extras, f"unknown extras [{group}]"
    python = re.search(r"python:(\d+)\.(\d+)", base["from"]).groups()
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"]).groups()
    assert tuple(map(int, python)) >= tuple(map(int, minimum))


def test_dockerfile_launcher_and_worker_targets():
    stages = dockerfile_stages()
    launcher = stages[-1]
    assert launcher["name"] == "launcher", "the default (last) target must be the launcher"
    assert launcher["from"] == "base"
    assert exec_form(instructions(launcher, "ENTRYPOINT")[-1]) == ENTRYPOINT
    uid, gid = launcher_user()
    assert uid >= 1000 and gid >= 1000, "the job must not run as root"
    assert re.search(rf"useradd\b.*--uid {uid}\b", " ".join(instructions(stage("base"), "RUN")))
    # CMD is a valid job command line whose config is in the image.
    from pipelines.ingest import _parse

    args, beam_args = _parse(exec_form(instructions(launcher, "CMD")[-1]))
    assert beam_args == []
    assert_config_in_image(args.config)

    worker = stage("worker")
    assert exec_form(instructions(worker, "ENTRYPOINT")[-1]) == ["/opt/apache/beam/boot"]
    (copy_boot,) = instructions(worker, "COPY")
    flags, operands = split_args(copy_boot)
    assert flags == ["--from=beam_boot"] and operands == ["/opt/apache/beam", "/opt/apache/beam"]
    # The harness image's Python and Beam versions match the image's own.
    boot_image = stage("beam_boot")["from"]
    python = re.search(r"python:(\d+\.\d+)", stage("base")["from"]).group(1)
    assert boot_image == f"apache/beam_python{python}_sdk:${{BEAM_VERSION}}"
    text = DOCKERFILE.read_text(encoding="utf-8")
    (beam_version,) = re.findall(r"^ARG BEAM_VERSION=(\S+)$", text, flags=re.MULTILINE)
    assert '"apache-beam[gcp]==${BEAM_VERSION}"' in text
    major_minor = ".".join(beam_version.split(".")[:2])
    runners = (INFRA / "RUNNERS.md").read_text(encoding="utf-8")
    assert f"apache-beam {major_minor}" in runners, "Dockerfile and RUNNERS.md disagree on Beam"


def test_dockerfile_bakes_in_no_credentials():
    for st in dockerfile_stages():
        for kw, rest in st["instructions"]:
            if kw in ("ENV", "ARG"):
                names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest) or [rest.split()[0]]
                for name in names:
                    assert not SECRET_NAME.search(name) and not name.startswith("AWS_"), name


def test_dockerfile_sets_the_allocator_environment():
    """The image's processes (the job and remote workers) start with the allocator settings
    the job applies to itself (semq_transforms.allocator.MALLOC_ENV)."""
    from semq_transforms.allocator import MALLOC_ENV

    env = {}
    for rest in instructions(stage("base"), "ENV"):
        env.update(dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", rest)))
    assert {k: v for k, v in env.items() if k.startswith("MALLOC_")} == MALLOC_ENV
    runners = (INFRA / "RUNNERS.md").read_text(encoding="utf-8")   # the custom-image recipe
    assert dict(re.findall(r"(MALLOC_[A-Z_]+)=(\d+)", runners)) == MALLOC_ENV


def workdir() -> PurePosixPath:
    (path,) = instructions(stage("base"), "WORKDIR")
    return PurePosixPath(path)


def assert_config_in_image(config: str) -> None:
    """``config`` (as the job sees it, relative to the image's WORKDIR) is a repo config that
    the Dockerfile copies to that place."""
    assert not PurePosixPath(config).is_absolute()
    in_image = workdir() / config
    for sources, dest in context_copies():
        for src in sources:
            dest_path = PurePosixPath(dest)
            if dest.endswith("/"):
                dest_path = dest_path / PurePosixPath(src).name
            if in_image.is_relative_to(dest_path):
                repo_file = ROOT / src / in_image.relative_to(dest_path)
                assert repo_file.is_file(), f"{config}: {repo_file} does not exist"
                return
    pytest.fail(f"{config} is not copied into the image (WORKDIR {workdir()})")


# --- Dataflow Flex Template ------------------------------------------------------------------

FLEX_DIR = INFRA / "flex-template"
FLEX_LAUNCHER = "/opt/google/dataflow/python_template_launcher"


def flex_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instructions(stage("flex-template"), "ENV"):
        env.update(dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", rest)))
    return env


def test_flex_template_target_runs_main_py_and_stays_a_worker():
    """One image for the launcher VM and the workers: the worker target (Beam's boot as
    entrypoint, none overridden) plus the launcher program, and FLEX_TEMPLATE_PYTHON_PY_FILE
    naming the copied infra/flex-template/main.py."""
    flex = stage("flex-template")
    assert flex["from"] == "worker"
    assert not instructions(flex, "ENTRYPOINT") and not instructions(flex, "USER")
    launcher_copy, main_copy = (split_args(c) for c in instructions(flex, "COPY"))
    assert launcher_copy == (["--from=flex_launcher"], [FLEX_LAUNCHER, FLEX_LAUNCHER])
    assert stage("flex_launcher")["from"] == "${FLEX_LAUNCHER_IMAGE}"
    # The launcher base has no default image: scratch fails the build at the COPY above.
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.findall(r"^ARG FLEX_LAUNCHER_IMAGE=(\S+)$", text, flags=re.MULTILINE) == ["scratch"]
    assert main_copy[1] == ["infra/flex-template/main.py", "/template/main.py"]
    assert flex_env() == {"FLEX_TEMPLATE_PYTHON_PY_FILE": "/template/main.py"}
    assert dockerfile_stages()[-1]["name"] == "launcher", "flex-template is not the default"


def test_flex_template_parameters_are_job_options():
    """Every metadata parameter, passed as the launcher passes it (--name=value), sets the
    job's option of that name; required ones are the parser's required ones, and each regex
    accepts the help text's example and refuses a value of the wrong kind."""
    from pipelines.ingest import _parse

    metadata = json.loads((FLEX_DIR / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["name"] and metadata["description"]
    params = {p["name"]: p for p in metadata["parameters"]}
    assert set(params) == {"config", "index_url"}
    examples = {"config": "/app/configs/s3.yaml", "index_url": "gs://bucket/indexes/minilm"}
    wrong = {"config": "configs/s3.yaml", "index_url": "/local/index"}
    argv = [f"--{name}={value}" for name, value in examples.items()]
    args, beam_args = _parse(argv)
    assert beam_args == [] and {k: v for k, v in vars(args).items() if k in examples} == examples
    # the job's flags that are not template parameters (--dry-run, --quiet) stay off
    assert not any(v for k, v in vars(args).items() if k not in examples)
    with pytest.raises(SystemExit):      # config is required, index_url is not
        _parse(["--index_url=gs://b/i"])
    assert [n for n, p in params.items() if not p["isOptional"]] == ["config"]
    for name, param in params.items():
        assert param["label"] and param["helpText"]
        (regex,) = param["regexes"]
        assert re.fullmatch(regex, examples[name]), (name, regex)
        assert not re.fullmatch(regex, wrong[name]), (name, regex)
    assert_config_in_image(str(PurePosixPath(examples["config"]).relative_to(workdir())))


def test_flex_template_main_runs_the_job(tmp_path):
    """main.py, run as the launcher runs it (python FILE --config=... --index_url=...) from
    another directory, publishes the job's index."""
    from semq_transforms.index import Index

    index_url = str(tmp_path / "index")
    done = subprocess.run(
        [sys.executable, str(FLEX_DIR / "main.py"), f"--config={ROOT / 'configs/local.yaml'}",
         f"--index_url={index_url}"],
        check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "published version 1" in done.stdout
    assert Index.open(index_url).manifest.rows == 20_000


def test_a_template_launch_describes_the_job_and_exits_0(tmp_path, capsys):
    """A runner that only describes the job (DataflowRunner given --template_location, as a
    Flex Template launch does) returns a result with no job: the job says so and exits 0,
    without waiting and without writing a failure report in the index."""
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

    from pipelines.ingest import job_runs_here, main

    data = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text(encoding="utf-8"))
    data["input"]["url"] = str(tmp_path / "sample" / "*.parquet")
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    index = tmp_path / "index"
    assert main(["--config", str(config_file), "--index-url", str(index),
                 f"--runner={__name__}.DescribingRunner"]) == 0
    out = capsys.readouterr().out
    assert "job described for the runner, which runs it; report: " in out
    assert not index.exists() or not [p for p in index.rglob("*") if p.is_file()]
    assert DescribingRunner.described == 1
    assert not job_runs_here(DataflowPipelineResult(None, None, None))


# --- Kubernetes CronJob -----------------------------------------------------------------------

def cronjob() -> dict:
    docs = [d for d in yaml.safe_load_all(CRONJOB.read_text(encoding="utf-8")) if d]
    jobs = [d for d in docs if d.get("kind") == "CronJob"]
    assert len(jobs) == 1 and jobs[0]["apiVersion"] == "batch/v1"
    assert not [d for d in docs if d.get("kind") == "Secret"], "no Secret in the repository"
    return jobs[0]


def pod_spec(job: dict) -> dict:
    return job["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_cronjob_schedule_and_failure_policy():
    job = cronjob()
    spec = job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    fields = spec["schedule"].split()
    assert len(fields) == 5 and all(re.fullmatch(r"[0-9*,/\-]+", f) for f in fields)
    template = spec["jobTemplate"]["spec"]
    pod = pod_spec(job)
    assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy
    (container,) = pod["containers"]
    rules = template["podFailurePolicy"]["rules"]
    fail_fast = [r for r in rules if r["action"] == "FailJob"]
    # Exit 1 (gate failed) is final; exit 2 (could not run) may be retried.
    assert len(fail_fast) == 1
    codes = fail_fast[0]["onExitCodes"]
    assert codes["containerName"] == container["name"]
    assert codes["operator"] == "In" and codes["values"] == [1]
    assert template["backoffLimit"] >= 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) \
        == launcher_user()


def test_cronjob_runs_the_job_cli_with_a_repo_config():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.ingest import _parse

    (container,) = pod_spec(cronjob())["containers"]
    # Either the image's ENTRYPOINT, or the same command spelled out.
    assert container.get("command", ENTRYPOINT) == ENTRYPOINT
    assert container.get("workingDir", str(workdir())) == str(workdir())
    args, beam_args = _parse([str(a) for a in container["args"]])
    assert_config_in_image(args.config)
    assert (ROOT / args.config).is_file()
    PipelineOptions(beam_args).get_all_options()  # the Beam options parse


def test_cronjob_credentials_come_from_a_secret_and_reach_the_config():
    (container,) = pod_spec(cronjob())["containers"]
    from pipelines.ingest import _parse

    config_path = ROOT / _parse([str(a) for a in container["args"]])[0].config
    config_text = config_path.read_text(encoding="utf-8")
    refs = {m.group(1): m.group(2) is not None for m in ENV_REF.finditer(config_text)}
    env = container["env"]
    names = {e["name"] for e in env}
    assert len(names) == len(env), "duplicate env names"
    for entry in env:
        name = entry["name"]
        assert name in refs, f"the CronJob sets {name}, which {config_path.name} never reads"
        if SECRET_NAME.search(name):
            assert "value" not in entry, f"{name} must come from a Secret, not a literal"
            assert "secretKeyRef" in entry["valueFrom"], name
    required = {name for name, optional in refs.items() if not optional}
    assert required <= names, f"required but not provided: {required - names}"
    # What the pod would see: every secret key present, or none (optional: true).
    full = {e["name"]: e.get("value", f"from-secret-{e['name']}") for e in env}
    cfg = load_config(config_path, env=full)
    opts = cfg.input.storage_options
    assert opts["key"] == "from-secret-AWS_ACCESS_KEY_ID"
    assert opts["secret"] == "from-secret-AWS_SECRET_ACCESS_KEY"
    assert cfg.output.storage_options == opts
    secret_refs = [e for e in env if "valueFrom" in e]
    assert all(e["valueFrom"]["secretKeyRef"].get("optional") for e in secret_refs)
    without = {e["name"]: e["value"] for e in env if "value" in e}
    assert "key" not in load_config(config_path, env=without).input.storage_options


# --- crontab example and README ---------------------------------------------------------------

def wrapper_variables() -> set[str]:
    return set(re.findall(r"\$\{(SEMQ_[A-Z_]+)", WRAPPER.read_text(encoding="utf-8")))


def test_crontab_example_calls_the_wrapper_with_a_repo_config():
    entries = []
    for raw in CRONTAB.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6 and all(re.fullmatch(r"[0-9*,/\-]+", f) for f in fields[:5])
        entries.append(shlex.split(fields[5]))
    assert entries
    for words in entries:
        (pos,) = [i for i, w in enumerate(words) if w.endswith("infra/schedules/run-nightly.sh")]
        assert (ROOT / words[pos + 1]).is_file(), f"no config {words[pos + 1]} in the repo"
        for word in words[:pos]:
            name, _, value = word.partition("=")
            assert name in wrapper_variables(), f"run-nightly.sh does not read {name}"
            if name == "SEMQ_INGEST_CMD":
                assert value.split()[-2:] == ["-m", "pipelines.ingest"]


def test_readme_describes_every_infra_file():
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    files = [p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*")
             if p.is_file() and p.name != "README.md" and "__pycache__" not in p.parts]
    assert files
    for name in files:
        assert f"`{name}`" in readme, f"infra/README.md does not mention {name}"
    for code in ("0", "1", "2", "3"):
        assert f"| {code} |" in readme


# --- the wrapper script -----------------------------------------------------------------------

FAKE_JOB = """\
set -u
printf '%s\\t' "$PWD" "${SEMQ_TEST_VAR-}" "$@" >> "$FAKE_LOG"
printf '\\n' >> "$FAKE_LOG"
if [[ -n "${FAKE_STARTED-}" ]]; then : > "$FAKE_STARTED"; fi
if [[ -n "${FAKE_RELEASE-}" ]]; then
    for _ in $(seq 200); do [[ -e "$FAKE_RELEASE" ]] && break; sleep 0.025; done
fi
exit "${FAKE_RC:-0}"
"""


@pytest.fixture()
def fake(tmp_path):
    """Environment that makes run-nightly.sh run a stand-in job; returns (env, calls())."""
    job = tmp_path / "fake_job.sh"
    job.write_text(FAKE_JOB, encoding="utf-8")
    log = tmp_path / "calls.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FAKE_LOG": str(log),
           "SEMQ_INGEST_CMD": f"{BASH} {job}", "SEMQ_LOCK_FILE": str(tmp_path / "job.lock")}

    def calls() -> list[list[str]]:
        if not log.exists():
            return []
        return [line.split("\t")[:-1] for line in log.read_text(encoding="utf-8").splitlines()]

    return env, calls


def run_wrapper(env: dict, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(WRAPPER), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def start_wrapper(env: dict, *args: str, output: int = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([BASH, str(WRAPPER), *args], env=env, stdout=output,
                            stderr=output, text=True)


def wait_for(path: Path, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.01)


@needs_bash
def test_wrapper_syntax_and_header():
    text = WRAPPER.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(WRAPPER, os.X_OK), "run-nightly.sh must be executable"
    result = subprocess.run([BASH, "-n", str(WRAPPER)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(WRAPPER)], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, result.stdout


@needs_flock
@pytest.mark.parametrize(("rc", "label", "detail"), [
    (0, "OK: published", "configs/s3.yaml"),
    (1, "GATE FAILED", "validation gate not passed, nothing published"),
    (2, "COULD NOT RUN", "a re-run is safe"),
    (7, "FAILED: the job", "unexpected status 7"),
    (137, "FAILED: the job", "killed by signal 9"),
])
def test_wrapper_propagates_the_exit_status_and_says_what_it_means(fake, rc, label, detail):
    env, calls = fake
    env["FAKE_RC"] = str(rc)
    result = run_wrapper(env, "configs/s3.yaml", "--index-url", "/tmp/with space",
                         "--direct_num_workers=2")
    assert result.returncode == rc, result.stderr
    # Failures go to stderr, the success line to stdout; exactly one verdict is logged.
    verdict = result.stdout if rc == 0 else result.stderr
    assert label in verdict and detail in verdict
    out = result.stdout + result.stderr
    for other in {"OK: published", "GATE FAILED", "COULD NOT RUN", "FAILED: the job"} - {label}:
        assert other not in out
    # The job ran once, in the repository root, with the config and the arguments unchanged.
    assert calls() == [[str(ROOT), "", "--config", "configs/s3.yaml", "--index-url",
                        "/tmp/with space", "--direct_num_workers=2"]]


@needs_flock
def test_wrapper_usage_errors_exit_2(fake, tmp_path):
    env, calls = fake
    for args in ((), ("--config",)):
        result = run_wrapper(env, *args)
        assert result.returncode == 2 and "usage" in result.stderr
    env["SEMQ_ENV_FILE"] = str(tmp_path / "missing.env")
    result = run_wrapper(env, "configs/local.yaml")
    assert result.returncode == 2 and "SEMQ_ENV_FILE" in result.stderr
    assert calls() == []


@needs_flock
def test_wrapper_exports_the_env_file_and_honours_workdir(fake, tmp_path):
    env, calls = fake
    env_file = tmp_path / "ingest.env"
    env_file.write_text("SEMQ_TEST_VAR=from-env-file\n", encoding="utf-8")
    env.update(SEMQ_ENV_FILE=str(env_file), SEMQ_WORKDIR=str(tmp_path))
    result = run_wrapper(env, "job.yaml")
    assert result.returncode == 0, result.stderr
    assert calls() == [[str(tmp_path), "from-env-file", "--config", "job.yaml"]]


@needs_bash
def test_wrapper_refuses_to_run_without_flock(fake, tmp_path):
    env, calls = fake
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "date", "basename"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} not found")
        (bin_dir / tool).symlink_to(found)
    env["PATH"] = str(bin_dir)
    result = run_wrapper(env, "configs/local.yaml")
    assert result.returncode == 2 and "flock not found" in result.stderr
    assert calls() == []


@needs_flock
def test_wrapper_never_runs_two_jobs_at_once(fake, tmp_path):
    env, calls = fake
    started, release = tmp_path / "started", tmp_path / "release"
    first = start_wrapper({**env, "FAKE_STARTED": str(started), "FAKE_RELEASE": str(release)},
                          "configs/local.yaml")
    try:
        wait_for(started)
        second = run_wrapper(env, "configs/local.yaml")
        assert second.returncode == 3, second.stderr
        assert "SKIPPED: another run for configs/local.yaml is still going" in second.stderr
        assert env["SEMQ_LOCK_FILE"] in second.stderr and f"pid {first.pid}," in second.stderr
        assert len(calls()) == 1, "the second run must not start the job"
    finally:
        release.touch()
        out, err = first.communicate(timeout=10)
    assert first.returncode == 0, err
    assert "OK: published" in out
    # The lock is free again once the first run is over.
    third = run_wrapper(env, "configs/local.yaml")
    assert third.returncode == 0, third.stderr
    assert len(calls()) == 2


@needs_flock
def test_the_lock_outlives_a_killed_wrapper_while_its_job_runs(fake, tmp_path):
    env, calls = fake
    started, release = tmp_path / "started", tmp_path / "release"
    # No pipes: the orphaned job would keep them open.
    first = start_wrapper({**env, "FAKE_STARTED": str(started), "FAKE_RELEASE": str(release)},
                          "configs/local.yaml", output=subprocess.DEVNULL)
    try:
        wait_for(started)
        first.kill()  # SIGKILL: no trap, no clean-up; the job keeps the inherited lock
        first.wait(timeout=5)
        assert run_wrapper(env, "configs/local.yaml").returncode == 3
    finally:
        release.touch()  # the orphaned stand-in job exits on its own
    deadline = time.monotonic() + 5
    while (result := run_wrapper(env, "configs/local.yaml")).returncode == 3:
        assert time.monotonic() < deadline, "the lock was never released"
        time.sleep(0.02)
    assert result.returncode == 0, result.stderr
    assert len(calls()) == 2


class DescribingRunner(PipelineRunner):
    """A runner that does what DataflowRunner does with --template_location: turns the
    pipeline into its portable description and returns Dataflow's result for a job that the
    service, not this process, will run."""

    described = 0

    def run_pipeline(self, pipeline, options):
        from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

        assert pipeline.to_runner_api().components.transforms
        DescribingRunner.described += 1
        return DataflowPipelineResult(None, None, options)
