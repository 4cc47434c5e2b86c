"""The allocator setting applied at import, and the ways to switch it off."""
import os
import subprocess
import sys

import pytest

CODE = "import nodeform.memory as m, nodeform; print(m.STATE['applied'], m.STATE['reason'])"


def _run(**env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", CODE], env=full, capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_import_applies_malloc_tuning_on_glibc():
    assert _run().startswith("True applied")


def test_switch_off_by_environment():
    assert _run(NODEFORM_MALLOC_TUNING="0") == "False switched off by NODEFORM_MALLOC_TUNING=0"


def test_user_malloc_variables_are_respected():
    assert _run(MALLOC_TRIM_THRESHOLD_="1000000").startswith("False left to the MALLOC_")
