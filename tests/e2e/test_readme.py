"""The README's quick start really works: its Python and curl examples run against a server."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ServerProcess

pytestmark = pytest.mark.e2e

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_python_example(served_examples: ServerProcess) -> None:
    code = re.search(r"```python\n(.*?)```", README, re.S)
    assert code is not None
    script = code.group(1).replace("127.0.0.1:8000", f"127.0.0.1:{served_examples.http_port}")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[0 2]"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_examples(served_examples: ServerProcess) -> None:
    block = re.search(r"```bash\ncurl(.*?)```", README, re.S)
    assert block is not None
    commands = ("curl" + block.group(1)).replace("localhost:8000", f"127.0.0.1:{served_examples.http_port}")
    out = subprocess.run(["bash", "-c", commands], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith("200\n")
    assert '"name":"iris"' in out.stdout
    assert '"data":[0,2]' in out.stdout
