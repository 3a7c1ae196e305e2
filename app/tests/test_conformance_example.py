"""The conformance suite's example in docs/channel-layer.md, pasted as it is into a test
module of its own, passes on Channels' in-memory layer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import channels_kit
from tests.test_variables import doc


def documented_example() -> str:
    """The Python block of the doc's "The conformance suite" section."""
    text = doc("channel-layer.md").read_text()
    section = text.split("## The conformance suite", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```python\n(.*?)```", section, re.S)
    return block


def test_the_documented_example_passes_on_the_in_memory_layer(tmp_path):
    (tmp_path / "test_example.py").write_text(documented_example())
    # The package this test process runs (installed in the image; a checkout's app/ elsewhere).
    path = os.pathsep.join([str(Path(channels_kit.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "test_example.py"],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "13 passed, 1 xfailed" in result.stdout, result.stdout
