"""The documentation keeps its promises: links resolve, named `make` targets exist, the README
stays short, and `.env.example` is the one reference of every variable the kit reads.

Run on the host by `make test` (scripts/test); reads files only.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README_MAX_BYTES = 10 * 1024


def tracked(*patterns: str) -> list[Path]:
    """Files git tracks (or would: new, not ignored) matching ``patterns``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *patterns],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted({REPO / name for name in listed if (REPO / name).is_file()})


MARKDOWN = tracked("*.md")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    text = FENCE.sub("", markdown.read_text())
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_there_is_documentation_to_check():
    names = {path.relative_to(REPO).as_posix() for path in MARKDOWN}
    assert {"README.md", "docs/using-the-kit.md", "docs/benchmarks.md", "loadtest/README.md"} <= names


@pytest.mark.parametrize("markdown", MARKDOWN, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(markdown: Path):
    broken = []
    for target in LINK.findall(FENCE.sub("", markdown.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not this repository's
        path, _, anchor = target.partition("#")
        resolved = (markdown.parent / path).resolve() if path else markdown
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(REPO)}")
    assert not broken, broken


def make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))


def code_of(markdown: Path) -> str:
    """What a reader would type: fenced blocks and inline code spans."""
    text = markdown.read_text()
    return "\n".join(FENCE.findall(text) + re.findall(r"`([^`\n]+)`", FENCE.sub("", text)))


@pytest.mark.parametrize("markdown", MARKDOWN, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_make_target_named_exists(markdown: Path):
    named = set(re.findall(r"(?:^|[\s;&(`])make ([a-z][\w-]*)", code_of(markdown), re.M))
    assert named <= make_targets(), sorted(named - make_targets())


def test_the_readme_is_short_and_lists_every_target():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= README_MAX_BYTES, f"README.md is {len(readme.encode())} bytes"
    assert readme.index("make up") < readme.index("make test") < readme.index("## ")
    listing = readme[readme.index("## Make targets") :]
    listed = set(re.findall(r"[a-z][\w-]*", FENCE.findall(listing)[0]))
    help_targets = set(re.findall(r"^([a-z][\w-]*):.*## ", (REPO / "Makefile").read_text(), re.M))
    assert help_targets - {"help"} <= listed, sorted(help_targets - listed)


def test_no_file_names_a_document_that_is_missing():
    named = re.compile(r"(?<![\w./-])((?:docs|loadtest|app)/[\w./-]*\.md|README\.md)\b")
    missing = [
        f"{path.relative_to(REPO)}: {name}"
        for path in tracked()
        if path.suffix not in {".png", ".lock"}
        for name in named.findall(path.read_text(errors="replace"))
        if not (REPO / name).exists() and not (path.parent / name).exists()
    ]
    assert not missing, missing


# --- variables ---------------------------------------------------------------------

ENV_EXAMPLE = REPO / ".env.example"
# Read by the code but not settings a user gives: set by the images and scripts themselves.
INTERNAL = {
    "SERVER_ROLE": "set by each image's entrypoint and compose service",
    "KIT_SETTINGS_KEYS": "the entrypoints' list of settings to print",
    "DJANGO_SETTINGS_MODULE": "set by the images",
    "WORKER_TEST_DIR": "the unit tests' worker project",
    "WORKER_TEST_PREFIX": "the unit tests' worker project",
    "TEST_REDIS_URL": "the unit tests' Redis",
    "TEST_REDIS_SHARD_URLS": "the unit tests' Redis",
    "NAME": "a loop variable of a shell script",
    "KIT_PROJECT_SETTINGS": "the project's settings module: the app image sets it (PROJECT_SETTINGS)",
    "STATIC_PUBLISH_DIR": "compose gives the migrate service nginx's static volume",
    "STATIC_URL_PATH": "compose gives nginx PROJECT_STATIC_URL",
    "KIT_STATIC_LOCATION": "computed by the nginx image's renderer from STATIC_URL_PATH",
    **dict.fromkeys(
        (
            "KIT_STREAM_LOCATIONS",
            "KIT_ASGI_PATH_LOCATIONS",
            "KIT_LONGPOLL_LOCATIONS",
            "KIT_WSGI_PATH_LOCATIONS",
            "KIT_WSGI_DOMAIN_SERVER",
        ),
        "computed by the nginx image's renderer from ROUTING and the paths",
    ),
}


def documented() -> dict[str, str]:
    """``.env.example``: variable -> its default (commented-out lines) or set value."""
    return dict(re.findall(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.M))


def read_by_code() -> dict[str, set[str]]:
    """Every variable the package, the demo, the images' scripts and the stack's compose files
    read -> where."""
    patterns = [
        r"env_(?:str|int|float|bool|list)\(\s*\"([A-Z][A-Z0-9_]*)\"",
        r"option_or_env\(\s*[^,]+,\s*\"([A-Z][A-Z0-9_]*)\"",
        r"split_globs\(\s*[^,]+,\s*\"([A-Z][A-Z0-9_]*)\"",
        r"environ(?:\.get)?\(\s*\"([A-Z][A-Z0-9_]*)\"",
        r"\$\{([A-Z][A-Z0-9_]*)",
    ]
    # Not images/base: the stand-ins of the official images read those images' variables.
    files = [
        *tracked("app/channels_kit/*.py", "app/demo/*.py"),
        *tracked("images/app/*.sh", "images/relay/*.sh", "images/nginx/*.sh", "images/common/*"),
        *tracked("compose.yaml", "compose/relay.yaml", "compose/*.env"),
    ]
    found: dict[str, set[str]] = {}
    for path in files:
        text = path.read_text()
        for pattern in patterns:
            for name in re.findall(pattern, text):
                found.setdefault(name, set()).add(path.relative_to(REPO).as_posix())
    return found


def test_every_variable_the_kit_reads_is_in_env_example():
    found = read_by_code()
    assert {"REDIS_URLS", "WORKER_CONCURRENCY", "DAPHNE_HTTP_TIMEOUT", "ROUTING"} <= set(found)
    missing = {name: sorted(where) for name, where in found.items() if name not in documented()}
    for name in INTERNAL:
        missing.pop(name, None)
    assert not missing, missing


def test_compose_defaults_agree_with_env_example():
    """Where compose gives a variable a default, it is the one `.env.example` documents."""
    defaults = documented()
    disagree = []
    for path in tracked("compose.yaml", "compose/*.yaml", "compose/*.env"):
        for name, default in re.findall(r"\$\{([A-Z][A-Z0-9_]*):-([^}$]*)\}", path.read_text()):
            if default and name in defaults and defaults[name] and defaults[name] != default:
                disagree.append(f"{path.relative_to(REPO)}: {name}={default}, .env.example: {defaults[name]}")
    assert not disagree, disagree


def test_no_file_speaks_of_the_seed():
    """Say what a thing is; the document this kit grew from is not in the repository."""
    mentions = [
        f"{path.relative_to(REPO)}:{number}"
        for path in tracked()
        if path.suffix not in {".png"}
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if re.search(r"\bseed\b", line, re.I)
    ]
    assert not mentions, mentions


def test_every_make_target_is_phony():
    makefile = (REPO / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:((?:.*\\\n)*.*)", makefile, re.M).group(1).replace("\\", " ").split())
    assert make_targets() <= phony, sorted(make_targets() - phony)


def test_no_file_names_a_command_that_is_missing():
    """Every operator's, engine's or benchmark's command named anywhere exists where named."""
    named = re.compile(
        r"(?<![\w./-])((?:scripts|loadtest/bin|deploy/swarm|deploy/native|deploy/kubernetes)/[\w.-]+)"
    )
    missing = [
        f"{path.relative_to(REPO)}: {name}"
        for path in tracked()
        if path.suffix not in {".png", ".lock"} and "tests/projects" not in path.as_posix()
        for name in named.findall(path.read_text(errors="replace"))
        if not (REPO / name.rstrip(".")).exists()
    ]
    assert not missing, missing
