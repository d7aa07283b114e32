"""Every command in the README's ``bash`` blocks is exercised: each ``cflight`` command's configs parse with
``--print_config`` (the same parser a user's run goes through, with every override given), every script it
names exists and compiles, and a command of a kind this test does not know fails it (so the README cannot
gain a command nobody checks). The jobs themselves run elsewhere: the main job and the tests in CI, the folder
flow in tests/integration/test_folder_flow.py, the shipped configs in tests/integration/."""
from __future__ import annotations

import os
import py_compile
import re
import shlex
import subprocess

import pytest
import yaml

from cflight.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
# commands that name a user's own files or an external service: checked for their form only
EXTERNAL = ("wandb", "pip", "git", "export", "cd", "ls", "chromium", "mkdir", "cp", "ln")


def readme_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks: continuation lines joined, comments and blank lines dropped."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                commands.append(line)
    return commands


def _cflight_args(words: list[str]) -> list[str] | None:
    """The arguments after the ``cflight`` entry point (``.venv/bin/cflight``, ``cflight``, ``-m cflight.cli``)."""
    for i, w in enumerate(words):
        if w.endswith("cflight") and "/" not in w.replace(".venv/bin/", ""):
            return words[i + 1:]
        if w == "cflight.cli" and i > 0 and words[i - 1] == "-m":
            return words[i + 1:]
    return None


def test_readme_has_commands() -> None:
    cmds = readme_commands(open(README).read())
    assert any(c.startswith("bash scripts/demo.sh") for c in cmds) and any("scripts/test.sh" in c for c in cmds)


@pytest.mark.parametrize("command", readme_commands(open(README).read()))
def test_readme_command(command: str, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    words = shlex.split(command.replace("$", ""))
    args = _cflight_args(words)
    if args is not None:
        sub = args[0]
        if sub in ("fit", "validate", "test", "predict"):
            try:
                main([*args, "--print_config"])
            except SystemExit as done:  # jsonargparse exits after printing
                assert done.code in (0, None), capsys.readouterr()
            assert "trainer:" in capsys.readouterr().out
        else:  # other subcommands take configs of their own: each exists and is YAML
            configs = [args[i + 1] for i, a in enumerate(args) if a in ("-c", "--config")]
            assert sub == "benchmark" and configs, command
            for c in configs:
                assert isinstance(yaml.safe_load(open(c)), dict), c
        return
    files = [w for w in words if re.search(r"\.(py|sh|sbatch)$", w)]
    if words[0] in ("bash", "sbatch") or words[0].endswith("python"):
        assert files, command
        for f in files:
            assert os.path.isfile(f), f"{command}: {f} does not exist"
            if f.endswith(".py"):
                py_compile.compile(f, doraise=True)
            else:
                subprocess.run(["bash", "-n", f], check=True)
        return
    assert words[0] in EXTERNAL, f"README command of an unknown kind (add a check here): {command}"
