"""Shell completion: the scripts `bluegreen completion` prints, driven by a real bash, offer commands,
options, colours, the deployment's versions and backup sets."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from bluegreen.backups.sets import BackupStore, Sources
from bluegreen.orchestrator.state.journal import Journal
from bluegreen.orchestrator.state.store import StateStore
from tests.conftest import BLUEGREEN


def complete(cwd: Path, words: str, shell: str = "bash") -> list[str]:
    """What bash offers after ``words`` (the line typed so far, ending in the word being completed)."""
    script = subprocess.run([*BLUEGREEN, "completion", shell], capture_output=True, text=True, check=True).stdout
    # The script calls `bluegreen` by name: a function stands in for the console script, same code.
    runner = " ".join(f"'{part}'" for part in BLUEGREEN)
    line = words.split(" ")
    bash = (f'bluegreen() {{ {runner} "$@"; }}\n{script}\n'
            f'COMP_WORDS=({" ".join(repr(w) for w in line)}); COMP_CWORD={len(line) - 1}\n'
            '_bluegreen_completion bluegreen\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    out = subprocess.run(["bash", "--norc", "-c", bash], cwd=cwd, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_")})
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


@pytest.fixture
def deployment_dir(tmp_path: Path) -> Path:
    """A deployment with two releases in its history and one backup set; nothing running."""
    subprocess.run([*BLUEGREEN, "init", str(tmp_path)], check=True, capture_output=True)
    journal = Journal(StateStore(tmp_path / ".bluegreen" / "state.db"))
    journal.begin("release", "tester", "bluegreen-model:v2", "v2", {}, "blue", "green", "bluegreen-model:v1", "v1",
                  {}, {"steps": []})
    journal.begin("release", "tester", "bluegreen-model:v3", "v3", {}, "green", "blue", "bluegreen-model:v2", "v2",
                  {}, {"steps": []})
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir(exist_ok=True)
    sqlite3.connect(db).close()
    BackupStore(tmp_path / ".bluegreen" / "backups", Sources(f"sqlite:///{db}", db, {})).create(reason="a test")
    return tmp_path


def test_commands_options_and_colours_are_offered(tmp_path: Path) -> None:
    assert complete(tmp_path, "bluegreen ro") == ["rollback"]
    assert complete(tmp_path, "bluegreen release --ba") == ["--bake"]
    assert complete(tmp_path, "bluegreen logs ") == ["blue", "green"]
    assert complete(tmp_path, "bluegreen backup v") == ["verify"]


def test_versions_come_from_the_history_newest_first_and_backup_sets_from_the_deployment(
        deployment_dir: Path) -> None:
    assert complete(deployment_dir, "bluegreen rollback --to ") == ["v3", "v2", "v1", "baseline"]
    assert complete(deployment_dir, "bluegreen rollback --to v") == ["v3", "v2", "v1"]
    [set_id] = [p.name for p in (deployment_dir / ".bluegreen" / "backups").iterdir() if not p.name.startswith(".")]
    assert complete(deployment_dir, "bluegreen backup verify ") == [set_id]


def test_outside_a_deployment_completion_offers_what_it_can_and_never_fails(tmp_path: Path) -> None:
    assert complete(tmp_path, "bluegreen rollback --to ") == ["baseline"]
    assert complete(tmp_path, "bluegreen backup verify ") == []


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_call_back_with_their_protocol(shell: str) -> None:
    script = subprocess.run([*BLUEGREEN, "completion", shell], capture_output=True, text=True, check=True).stdout
    assert f"_BLUEGREEN_COMPLETE=complete_{shell}" in script and "bluegreen" in script


def test_an_unknown_shell_is_refused_with_the_ones_it_knows() -> None:
    out = subprocess.run([*BLUEGREEN, "completion", "tcsh"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.splitlines()[0] == "Error: Invalid value for SHELL: 'tcsh' is not a shell bluegreen completes; " \
                                         "use bash, zsh or fish"


def test_the_install_writes_the_script_where_bash_reads_it(tmp_path: Path) -> None:
    out = subprocess.run([*BLUEGREEN, "completion", "bash", "--install"], capture_output=True, text=True,
                         env={**os.environ, "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    installed = tmp_path / ".bash_completions" / "bluegreen.sh"
    assert "_BLUEGREEN_COMPLETE=complete_bash" in installed.read_text()
    assert f"source '{installed}'" in (tmp_path / ".bashrc").read_text()
