"""The GitHub workflows (they cannot run here): linted with actionlint, and checked for what they
must do: CI runs `bash .ci/run` on pushes and pull requests; Pages builds the book with the
README's build command and deploys _build/html with the official Pages actions."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
CI, PAGES = WORKFLOWS / "ci.yml", WORKFLOWS / "pages.yml"


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def steps(workflow: dict) -> list[dict]:
    return [s for job in workflow["jobs"].values() for s in job.get("steps", [])]


def uses(workflow: dict) -> list[str]:
    return [s["uses"].split("@")[0] for s in steps(workflow) if "uses" in s]


def readme_build_command() -> str:
    """The README's fenced command that builds the book (the one with `jupyter-book build`)."""
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    found = [b.strip() for b in blocks if "jupyter-book build" in b]
    assert len(found) == 1, f"expected one fenced build command in README.md, found {found}"
    return found[0]


def actionlint() -> str:
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed (pip install -r requirements.txt)")
    return exe


def test_workflows_pass_actionlint():
    proc = subprocess.run([actionlint(), "-no-color", str(CI), str(PAGES)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_actionlint_catches_a_broken_workflow(tmp_path):
    # the linter really checks: a typo'd key and an undefined expression in a copy of ci.yml
    broken = CI.read_text().replace("runs-on:", "run-on:", 1)
    broken += "      - run: echo ${{ matrix.nope }}\n"
    (tmp_path / "ci.yml").write_text(broken)
    proc = subprocess.run([actionlint(), "-no-color", str(tmp_path / "ci.yml")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert '"run-on"' in proc.stdout and "nope" in proc.stdout


def test_ci_runs_the_ci_script_on_pushes_and_pull_requests():
    ci = load(CI)
    assert {"push", "pull_request"} <= set(ci["on"])
    assert uses(ci)[0] == "actions/checkout"
    runs = [s["run"].strip() for s in steps(ci) if "bash .ci/run" in s.get("run", "")]
    assert runs == ["bash .ci/run"]
    assert ci["permissions"] == {"contents": "read"}
    text = CI.read_text()
    assert "fi_subset" in text and "APSE_DATA" in text  # says what happens without the data


def test_pages_builds_with_the_readme_command_and_deploys_build_html():
    pages = load(PAGES)
    assert "push" in pages["on"] and pages["on"]["push"]["branches"] == ["main"]
    build = [s for s in steps(pages) if "jupyter-book build" in s.get("run", "")]
    assert len(build) == 1 and build[0]["run"].strip() == readme_build_command()
    assert uses(pages) == ["actions/checkout", "actions/setup-python", "actions/configure-pages",
                           "actions/upload-pages-artifact", "actions/deploy-pages"]
    upload = next(s for s in steps(pages)
                  if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    deploy = pages["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert pages["permissions"] == {"contents": "read"}  # the build job needs no more
    assert pages["concurrency"] == {"group": "pages", "cancel-in-progress": False}


def test_the_book_ignores_the_workflows_folder():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert ".github" in config["exclude_patterns"]
