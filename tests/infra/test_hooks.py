"""azure.yaml's hooks run as a user has them (issue 20, items 2 and 3): each hook's posix command, run the way azd
runs it (the script file with its `shell`, from the project root), in a stripped environment whose PATH is the
system's, `/usr/bin:/bin`, and nothing else: no venv, no pyenv shim, no `python` alias, no third-party package.

Stock Debian/Ubuntu and macOS have a `python3` there and no `python`, and that python3 has no `requests`: a hook
calling `python`, or importing `requests`, fails. Where /usr/bin has no python3 at all (a machine whose only
Python is pyenv's or a venv's), the PATH is one directory holding a single `python3` symlink to the base
interpreter (sys._base_executable, not the venv's), then /usr/bin:/bin: the closest stand-in for a system Python
(its site-packages may hold more than a stock one; the stdlib-only import test in
tests/integration/test_twilio_number_hook.py covers that).

Windows (pwsh) cannot run here; the .ps1 scripts are checked for what they call.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_ACCOUNT_SID, TEST_FROM
from tests.infra.infra_tools import ROOT, load_yaml
from tests.twilio_signing import TEST_AUTH_TOKEN

SYSTEM_BIN = "/usr/bin:/bin"
VOICE = "https://func-abc.azurewebsites.net/api/voice"
SMS = "https://func-abc.azurewebsites.net/api/sms"


@pytest.fixture(scope="module")
def azure_yaml() -> dict[str, Any]:
    return load_yaml(ROOT / "azure.yaml")


def system_path(tmp_path: Path) -> str:
    if Path("/usr/bin/python3").exists():
        return SYSTEM_BIN
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    stand_in = tmp_path / "system-python"
    stand_in.mkdir(exist_ok=True)
    (stand_in / "python3").symlink_to(base)
    return f"{stand_in}:{SYSTEM_BIN}"


def system_python_version(path: str) -> str:
    proc = subprocess.run(["python3", "-c", 'import sys; print("%d.%d" % sys.version_info[:2])'],
                          capture_output=True, text=True, env={"PATH": path}, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def project_copy(tmp_path: Path, *extra: str) -> Path:
    """The files a hook touches, in a scratch project root (the worktree's own __pycache__ stays untouched)."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "infra" / "hooks", project / "infra" / "hooks")
    for name in extra:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / name)
    return project


def run_hook(doc: dict[str, Any], hook: str, project: Path, path: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``hooks.<hook>.posix`` as azd does: a `run` naming a file is run by its shell from the project root;
    inline text is written to a script file first."""
    spec = doc["hooks"][hook]["posix"]
    assert spec["shell"] == "sh", spec
    run = spec["run"]
    if (project / run).is_file():
        script = run
    else:
        inline = project.parent / f"{hook}-inline.sh"
        inline.write_text(run + "\n")
        script = str(inline)
    home = project.parent / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(["/bin/sh", script], cwd=project, capture_output=True, text=True, timeout=120,
                          env={"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", **env})


def pyc_flags(pyc: Path) -> int:
    """PEP 552 flags word: 0b11 = hash-based and checked against the source."""
    return int.from_bytes(pyc.read_bytes()[4:8], "little")


# ------------------------------------------------------------------ prepackage
def test_prepackage_compiles_checked_hash_bytecode_with_only_the_system_python3(
        azure_yaml: dict[str, Any], tmp_path: Path) -> None:
    path = system_path(tmp_path)
    version = system_python_version(path)
    project = project_copy(tmp_path, "function_app.py", "shared")
    sources = sorted((project / "shared").glob("*.py")) + [project / "function_app.py"]
    before = {p: p.read_bytes() for p in sources}

    proc = run_hook(azure_yaml, "prepackage", project, path, PYTHON_VERSION=version)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    tag = "cpython-" + version.replace(".", "")
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        assert pyc.exists(), f"{pyc.name} missing: {proc.stdout} {proc.stderr}"
        assert pyc_flags(pyc) == 0b11, pyc
    assert {p: p.read_bytes() for p in sources} == before


def test_prepackage_goes_on_without_bytecode_when_no_python_is_on_path(azure_yaml: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    project = project_copy(tmp_path, "function_app.py", "shared")
    proc = run_hook(azure_yaml, "prepackage", project, str(empty))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no Python 3.11 on PATH" in proc.stderr and "without precompiled bytecode" in proc.stderr
    assert not list(project.rglob("*.pyc"))


def test_prepackage_skips_bytecode_of_another_python_version(azure_yaml: dict[str, Any], tmp_path: Path) -> None:
    """Python reads only .pyc files of its own version: 3.11's would be dead weight in a 3.12 app's package."""
    path = system_path(tmp_path)
    project = project_copy(tmp_path, "function_app.py", "shared")
    proc = run_hook(azure_yaml, "prepackage", project, path, PYTHON_VERSION="3.99")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no Python 3.99 on PATH (found python3 (" in proc.stderr
    assert not list(project.rglob("*.pyc"))


def test_prepackage_fails_the_deploy_on_a_source_that_does_not_compile(azure_yaml: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    path = system_path(tmp_path)
    project = project_copy(tmp_path, "function_app.py", "shared")
    (project / "shared" / "broken.py").write_text("def broken(:\n")
    proc = run_hook(azure_yaml, "prepackage", project, path, PYTHON_VERSION=system_python_version(path))
    assert proc.returncode != 0


def test_hook_python_defaults_follow_the_bicep_python_version(bicep: dict[str, Any]) -> None:
    default = bicep["main.bicep"]["parameters"]["pythonVersion"]["default"]
    assert default == "3.11"
    assert '"${PYTHON_VERSION:-' + default + '}"' in (ROOT / "infra/hooks/prepackage.sh").read_text()
    assert f"else {{ '{default}' }}" in (ROOT / "infra/hooks/prepackage.ps1").read_text()
    params = json.loads((ROOT / "infra/main.parameters.json").read_text())["parameters"]
    assert params["pythonVersion"]["value"] == "${PYTHON_VERSION=" + default + "}"


# ------------------------------------------------------------------ postprovision
def azd_env(fake: Any, **extra: str) -> dict[str, str]:
    return {"TWILIO_FROM_NUMBER": TEST_FROM, "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
            "VOICE_WEBHOOK_URL": VOICE, "SMS_WEBHOOK_URL": SMS, "TWILIO_API_BASE_URL": fake.base_url,
            "AZURE_ENV_NAME": "dev", **extra}


def fake_azd(tmp_path: Path) -> tuple[Path, Path]:
    """A directory with an `azd` that records its arguments (one call per line)."""
    bin_dir, calls = tmp_path / "azd-bin", tmp_path / "azd-calls.txt"
    bin_dir.mkdir()
    (bin_dir / "azd").write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n')
    (bin_dir / "azd").chmod(0o755)
    return bin_dir, calls


def test_postprovision_points_the_number_at_the_app_with_only_the_system_python3(
        azure_yaml: dict[str, Any], tmp_path: Path, twilio_fake: Any) -> None:
    sid = twilio_fake.add_phone_number(TEST_FROM, voice_url="https://old.example.com/voice")
    proc = run_hook(azure_yaml, "postprovision", project_copy(tmp_path), system_path(tmp_path),
                    **azd_env(twilio_fake))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    number = twilio_fake.phone_numbers[sid]
    assert (number["voice_url"], number["sms_url"], number["voice_method"], number["sms_method"]) == \
        (VOICE, SMS, "POST", "POST")
    assert f"voice_url: https://old.example.com/voice -> {VOICE}" in proc.stdout
    assert TEST_AUTH_TOKEN not in proc.stdout + proc.stderr
    assert "TWILIO_WRITE_SECRETS true" in proc.stdout  # the token is in the env but was not written: say how


def test_postprovision_makes_the_secret_write_flag_one_shot(azure_yaml: dict[str, Any], tmp_path: Path,
                                                           twilio_fake: Any) -> None:
    twilio_fake.add_phone_number(TEST_FROM)
    bin_dir, calls = fake_azd(tmp_path)
    proc = run_hook(azure_yaml, "postprovision", project_copy(tmp_path), f"{bin_dir}:{system_path(tmp_path)}",
                    **azd_env(twilio_fake, TWILIO_WRITE_SECRETS="true"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls.read_text().splitlines() == ["env set TWILIO_WRITE_SECRETS false --environment dev"]
    assert "TWILIO_WRITE_SECRETS is false again" in proc.stdout


def test_postprovision_without_azd_on_path_says_how_to_reset_the_flag(azure_yaml: dict[str, Any], tmp_path: Path,
                                                                     twilio_fake: Any) -> None:
    twilio_fake.add_phone_number(TEST_FROM)
    proc = run_hook(azure_yaml, "postprovision", project_copy(tmp_path), system_path(tmp_path),
                    **azd_env(twilio_fake, TWILIO_WRITE_SECRETS="true"))
    assert proc.returncode == 1
    assert "azd env set TWILIO_WRITE_SECRETS false" in proc.stderr


def test_postprovision_without_python_reports_and_fails_softly(azure_yaml: dict[str, Any], tmp_path: Path,
                                                              twilio_fake: Any) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = run_hook(azure_yaml, "postprovision", project_copy(tmp_path), str(empty), **azd_env(twilio_fake))
    assert proc.returncode == 1 and "no python3" in proc.stderr
    assert azure_yaml["hooks"]["postprovision"]["posix"]["continueOnError"] is True


# ------------------------------------------------------------------ wiring, and Windows
def test_every_hook_is_a_script_file_for_sh_and_pwsh(azure_yaml: dict[str, Any]) -> None:
    assert set(azure_yaml["hooks"]) == {"prepackage", "postprovision"}
    for name, hook in azure_yaml["hooks"].items():
        assert (hook["posix"]["shell"], hook["windows"]["shell"]) == ("sh", "pwsh"), name
        for platform, suffix in (("posix", ".sh"), ("windows", ".ps1")):
            run = hook[platform]["run"]
            assert run == f"infra/hooks/{name}{suffix}" and (ROOT / run).is_file(), (name, platform)
    assert "prepackage" not in {k for k, v in azure_yaml["hooks"].items() if v["posix"].get("continueOnError")}


@pytest.mark.parametrize("script", ["prepackage.ps1", "postprovision.ps1"])
def test_windows_scripts_try_the_launcher_then_python3_then_python(script: str) -> None:
    text = (ROOT / "infra" / "hooks" / script).read_text()
    candidates = re.search(r"foreach \(\$candidate in @\(([^)]*)\)\)", text)
    assert candidates is not None, script
    names = [c.strip().strip("'\"") for c in candidates[1].split(",")]
    assert names[-3:] == ["py -3", "python3", "python"], names
    assert "$LASTEXITCODE" in text  # a Store alias that runs nothing is not taken for Python
    assert "compileall" in text if script.startswith("pre") else "configure_twilio_number.py" in text


def test_posix_scripts_never_call_a_bare_python_first() -> None:
    for script in ("prepackage.sh", "postprovision.sh"):
        text = (ROOT / "infra" / "hooks" / script).read_text()
        loop = re.search(r"for candidate in ([^;]*);", text)
        assert loop is not None and loop[1].split()[-2:] == ["python3", "python"], script
        assert os.access(ROOT / "infra" / "hooks" / script, os.R_OK)


def test_prepackage_compiles_what_the_cold_start_benchmark_measures() -> None:
    """bench/cold_start.py measures the package with the bytecode this hook ships: the same compileall run."""
    from bench.cold_start import COMPILE

    for script in ("prepackage.sh", "prepackage.ps1"):
        assert " ".join(COMPILE) in (ROOT / "infra" / "hooks" / script).read_text(), script
