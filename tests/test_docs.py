"""Every shell command shown in README.md and docs/*.md is run here on the tiny demo checkpoint, or is marked.

A shell block is a fenced block whose info string is ``bash``, ``sh``, ``shell`` or ``console`` (in a
``console`` block, commands start with ``$ ``). The line right before its opening fence may mark it:

    <!-- needs: real weights -->                  not run: needs the pinned checkpoint
    <!-- needs: gpu -->                           not run: needs a CUDA GPU
    <!-- needs: cloud credentials -->             not run: needs a fal or Modal account
    <!-- needs: real weights, gpu -->             several reasons, comma-separated
    <!-- run by: tests/test_x.py::test_name -->   another test runs it (or the same program on the
                                                  tiny checkpoint); comma-separate several tests

Unmarked blocks are run, page by page and in order, in a scratch folder laid out like the project
(its files linked, ``../shared`` beside it, ``.venv`` linked to this interpreter's environment, HOME
inside it, so ``acestep-app`` without weights uses the tiny demo it writes there):

* ``acestep-app serve ...`` starts a server in the background (the page's port ``8000``, also serve's
  default, is replaced by a free one everywhere on the page) and waits for ``/health``; it is stopped
  at the end of the page;
* other ``acestep-app ...`` commands run in this process through ``acestep_app.cli.main`` (bash expands
  their words first), which keeps the page fast;
* ``export ...`` sets variables for the rest of the page; anything else runs in ``bash -c``;
* commands that install packages (``python3 -m venv``, ``. .venv/bin/activate``, ``pip install``) are
  not run again: they must be steps of ``.ci/run``, and a block that shows ``python -m pytest`` must be
  exactly ``.ci/run``'s steps (CI runs them; ``test_setup_commands_are_ci_runs_steps``).

A fenced block with a file name after its language (```` ```python client.py ````) is written to that
file in the scratch folder before the blocks after it run. Commands in marked blocks, and commands
quoted inline (`acestep-app ...`, `.venv/bin/python bench/x.py ...`), are not run but still checked:
``acestep-app`` ones must parse with the real CLI parser, and every ``--flag`` of a ``bench/`` script
must still exist in that script.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, SHARED_DIR

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
NEEDS = {"real weights", "gpu", "cloud credentials"}
MARKER = re.compile(r"^<!--\s*(needs|run by):\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)[ \t]*(\S*)\s*$")
DOC_PORT = "8000"
PORT_PATTERN = re.compile(r"(?<![\d.])8000(?!\d)")
SETUP = re.compile(r"^(python3 -m venv |\. \.venv/bin/activate|source \.venv/bin/activate|pip install )")
PYTEST = re.compile(r"^python -m pytest\b")
BENCH = re.compile(r"^(?:\w+=\S+ )*(?:\.venv/bin/python |python )?(bench/\w+\.py)\b(.*)$")
COMMAND_TIMEOUT = 180

HOW_TO_FIX = (
    "Every shell command in README.md and docs/ must run on the tiny demo checkpoint (tests/test_docs.py "
    "runs it), or its block must be marked on the line right before the ``` fence with one of "
    "<!-- needs: real weights -->, <!-- needs: gpu -->, <!-- needs: cloud credentials --> "
    "or <!-- run by: tests/test_x.py::test_name --> (another test runs it). See tests/test_docs.py's docstring."
)


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    file_name: str
    text: str
    marker: tuple[str, str] | None  # ("needs" | "run by", value)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(PROJECT_ROOT)}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    def commands(self) -> list[str]:
        """The block's commands: continuation lines joined, comments and (console) output dropped."""
        lines = self.text.splitlines()
        if self.language == "console":
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        commands, pending = [], ""
        for line in lines:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command = (pending + line).strip()
            pending = ""
            if command and not command.startswith("#"):
                commands.append(command)
        return commands


def read_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening or not lines[index].startswith("```"):
            index += 1
            continue
        end = next((k for k in range(index + 1, len(lines)) if lines[k].startswith("```")), None)
        assert end is not None, f"{page.relative_to(PROJECT_ROOT)}:{index + 1}: a ``` fence is never closed"
        previous = lines[index - 1] if index else ""
        marker = MARKER.match(previous)
        blocks.append(Block(page, index + 1, opening.group(1), opening.group(2), "\n".join(lines[index + 1:end]),
                            (marker.group(1), marker.group(2)) if marker else None))
        index = end + 1
    return blocks


def page_id(page: Path) -> str:
    return str(page.relative_to(PROJECT_ROOT))


# -- what .ci/run runs --------------------------------------------------------------------------------


def split_chain(command: str) -> list[list[str]]:
    """``a && b`` -> [[a's words], [b's words]], without pip's ``-q``."""
    words, parts = shlex.split(command), [[]]
    for word in words:
        if word == "&&":
            parts.append([])
        elif word != "-q":
            parts[-1].append(word)
    return [part for part in parts if part]


def ci_steps() -> list[list[str]]:
    """``.ci/run``'s commands from ``python3 -m venv`` to ``python -m pytest``, as word lists."""
    steps, started = [], False
    for line in (PROJECT_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("python3 -m venv"):
            started = True
        if not started or not line or line.startswith(("#", "set ")):
            continue
        steps.extend(split_chain(line))
        if PYTEST.match(line):
            return steps
    raise AssertionError(".ci/run has no `python3 -m venv` ... `python -m pytest` steps")


def covered_by_ci(step: list[str], ci: list[list[str]]) -> bool:
    """A doc's setup step is one of CI's, ``pip install -e .`` also when CI installs ``.[extras]``."""
    base = [re.sub(r"^\.\[[\w,]+\]$", ".", word) for word in step]
    return any(step == known or base == [re.sub(r"^\.\[[\w,]+\]$", ".", word) for word in known] for known in ci)


def test_setup_commands_are_ci_runs_steps():
    ci = ci_steps()
    seen_test_block = False
    for page in PAGES:
        for block in read_blocks(page):
            if not block.is_shell or block.marker:
                continue
            commands = block.commands()
            if any(PYTEST.match(command) for command in commands):
                steps = [step for command in commands for step in split_chain(command)]
                assert steps == ci, (
                    f"{block.where}: this block shows how to run the tests, so it must be exactly .ci/run's "
                    f"steps (without -q):\n  " + "\n  ".join(shlex.join(step) for step in ci))
                seen_test_block = True
                continue
            for command in commands:
                for step in split_chain(command):
                    if SETUP.match(shlex.join(step)):
                        assert covered_by_ci(step, ci), (
                            f"{block.where}: `{shlex.join(step)}` installs something .ci/run does not, so no "
                            f"test checks it. Make it a step of .ci/run, or mark the block. {HOW_TO_FIX}")
    assert seen_test_block, "README.md must show the command that runs the tests (.ci/run's steps)"


# -- markers and static checks ------------------------------------------------------------------------


def names_a_test(reference: str) -> bool:
    path, _, name = reference.partition("::")
    file = PROJECT_ROOT / path
    if not (path.startswith("tests/") and file.is_file() and name):
        return False
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef) and node.name == name.split("[")[0] for node in tree.body)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_markers_name_a_reason_or_an_existing_test(page):
    for block in read_blocks(page):
        if block.marker is None:
            continue
        assert block.is_shell, f"{block.where}: a <!-- needs/run by --> marker belongs right before a shell block"
        kind, value = block.marker
        items = [item.strip() for item in value.split(",") if item.strip()]
        assert items, f"{block.where}: an empty marker. {HOW_TO_FIX}"
        if kind == "needs":
            unknown = [item for item in items if item not in NEEDS]
            assert not unknown, f"{block.where}: unknown need {unknown}; use {sorted(NEEDS)}. {HOW_TO_FIX}"
        else:
            missing = [item for item in items if not names_a_test(item)]
            assert not missing, f"{block.where}: no such test {missing} (write tests/<file>.py::<function>)"


def inline_commands(page: Path) -> list[str]:
    """Commands quoted in inline code: `acestep-app ...` and `[VAR=x] .venv/bin/python bench/x.py ...`."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    spans = (" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text))
    return [span for span in spans if span.startswith("acestep-app ") or BENCH.match(span) and "/" in span.split()[0]]


def cli_help(words: list[str]) -> str | None:
    """The help text of the (sub)command ``words`` names, or None when there is no such subcommand."""
    import contextlib
    import io

    from acestep_app.cli import build_parser

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args([*words, "--help"])
    except SystemExit as stop:
        return printed.getvalue() if stop.code == 0 else None
    return None


def check_command_words(command: str, where: str) -> None:
    """Every ``--flag`` of an ``acestep-app`` or ``bench/`` command still exists (the command is not run)."""
    if command.startswith("acestep-app "):
        try:
            words = shlex.split(command.split(" # ")[0])[1:]
        except ValueError:
            words = command.split()[1:]  # shell quoting shlex cannot read ($'...'): the flags still split
        head = [word for word in words[:2] if not word.startswith("-")][: 2 if words[:1] == ["weights"] else 1]
        text = cli_help(head)
        assert text is not None, f"{where}: `{command}`: acestep-app has no subcommand {' '.join(head)!r}"
        for flag in (word.split("=")[0] for word in words if word.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                f"{where}: `{command}` uses {flag}, which `acestep-app {' '.join(head)}` no longer has")
        return
    bench = BENCH.match(command)
    if bench:
        script = PROJECT_ROOT / bench.group(1)
        assert script.is_file(), f"{where}: `{command}` names {bench.group(1)}, which does not exist"
        source = script.read_text(encoding="utf-8")
        for flag in re.findall(r"(?<!\S)(--[\w-]+)", bench.group(2)):
            assert f'"{flag}"' in source, f"{where}: `{command}` uses {flag}, which {bench.group(1)} no longer has"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_commands_not_run_here_still_parse(page):
    for block in read_blocks(page):
        if block.is_shell and block.marker:
            for command in block.commands():
                check_command_words(re.sub(r"^(\w+=\S+ )+", "", command), block.where)
    for command in inline_commands(page):
        check_command_words(command, f"{page_id(page)} (inline)")


def test_readme_stays_short_and_its_links_resolve():
    readme = PROJECT_ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move the depth into docs/<topic>.md (limit 300)"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (PROJECT_ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def test_readme_lists_every_served_endpoint():
    from acestep_app.engine.family import all_families

    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    for family in all_families():
        for endpoint in family.endpoints:
            fal_id = "/".join(part for part in ("fal-ai", family.app_name, endpoint.sub_path) if part)
            assert f"`{fal_id}`" in readme, (
                f"README.md's endpoint table lacks `{fal_id}` ({family.name}'s {endpoint.name}): add a row "
                f"(fal endpoint, path, input, what it does)")


# -- running the unmarked blocks ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Scratch:
    """A folder laid out like the project, with the page's environment and its servers."""

    root: Path
    port: str
    env: dict[str, str] = field(default_factory=dict)
    servers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def project(self) -> Path:
        return self.root / "project"

    @classmethod
    def create(cls, root: Path) -> Scratch:
        project = root / "project"
        project.mkdir()
        for entry in PROJECT_ROOT.iterdir():
            if entry.name not in {".git", ".venv", "data"} and not entry.name.startswith(".pytest"):
                (project / entry.name).symlink_to(entry)
        (project / ".venv").symlink_to(Path(sys.prefix))
        (root / "shared").symlink_to(SHARED_DIR.resolve())
        (root / "home").mkdir()
        env = {key: value for key, value in os.environ.items()
               if key not in {"ACESTEP_INFRA", "ACESTEP_WEIGHTS_DIR", "ACESTEP_API_KEY", "OMP_NUM_THREADS"}}
        env.update(HOME=str(root / "home"), ACESTEP_SHARED_DIR=str(root / "shared"),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
        return cls(root, str(free_port()), env)

    def bash(self, command: str, where: str, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run(["bash", "--noprofile", "--norc", "-c", command], cwd=self.project, env=self.env,
                              capture_output=True, timeout=COMMAND_TIMEOUT, **kwargs)
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-3000:]
            output = output.decode(errors="replace") if isinstance(output, bytes) else output
            pytest.fail(f"{where}: `{command}` exited with {done.returncode}:\n{output}\n{HOW_TO_FIX}")
        return done

    def export(self, command: str, where: str) -> None:
        done = self.bash(f"{command}\nenv -0", where)
        self.env = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)

    def serve(self, command: str, where: str) -> None:
        if not re.search(r"--port[ =]", command):
            command = f"{command} --port {self.port}"  # the default port (8000) is the page's port
        log = open(self.root / f"server-{len(self.servers)}.log", "wb")
        server = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", f"exec {command}"], cwd=self.project,
                                  env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.servers.append(server)
        certificate = re.search(r"--ssl-certfile\s+(\S+)", command)
        wait_for_health(server, self.port, self.project / certificate.group(1) if certificate else None,
                        log.name, where)

    def stop(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()


def wait_for_health(server: subprocess.Popen, port: str, certificate: Path | None, log: str, where: str) -> None:
    import httpx

    scheme = "https" if certificate else "http"
    verify = ssl.create_default_context(cafile=str(certificate)) if certificate else True
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"{where}: the server exited with {server.returncode}:\n{Path(log).read_text()[-3000:]}")
        try:
            if httpx.get(f"{scheme}://127.0.0.1:{port}/health", verify=verify, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{where}: the server did not answer /health within 120 s:\n{Path(log).read_text()[-3000:]}")


def run_in_process(scratch: Scratch, command: str, where: str, monkeypatch) -> None:
    """``acestep-app <words>`` through ``acestep_app.cli.main``, its words expanded by bash as a shell would."""
    from acestep_app.cli import main

    words = scratch.bash(f"printf '%s\\0' {command[len('acestep-app '):]}", where).stdout.decode().split("\0")[:-1]
    for key in set(os.environ) - set(scratch.env):
        monkeypatch.delenv(key)
    for key, value in scratch.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(scratch.project)
    try:
        code = main(words)
    except SystemExit as stop:
        code = stop.code
    assert code in (0, None), f"{where}: `{command}` exited with {code}. {HOW_TO_FIX}"


def run_command(scratch: Scratch, command: str, where: str, monkeypatch) -> None:
    if SETUP.match(command) or PYTEST.match(command):
        return  # the install steps and the test run are .ci/run's (test_setup_commands_are_ci_runs_steps)
    if command.startswith("export "):
        scratch.export(command, where)
    elif command.startswith("acestep-app serve"):
        scratch.serve(command, where)
    elif command.startswith("acestep-app ") and not re.search(r"[|;<>]|&&", command):
        run_in_process(scratch, command, where, monkeypatch)
    else:
        scratch.bash(command, where)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_unmarked_commands_run_on_the_tiny_checkpoint(page, tmp_path, monkeypatch):
    blocks = read_blocks(page)
    if not any(block.is_shell and not block.marker for block in blocks):
        return
    scratch = Scratch.create(tmp_path)
    try:
        for block in blocks:
            if block.file_name and not block.is_shell:
                (scratch.project / block.file_name).write_text(block.text + "\n", encoding="utf-8")
            if not block.is_shell or block.marker:
                continue
            for command in block.commands():
                run_command(scratch, PORT_PATTERN.sub(scratch.port, command), block.where, monkeypatch)
    finally:
        scratch.stop()
