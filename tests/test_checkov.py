"""The rendered ARM templates pass checkov (``--framework arm``).

Needs checkov (in the ``test`` extra: ``pip install -e '.[test]'``); without it this test
fails rather than skips. A check that contradicts the mission is skipped in the template
resource itself, with its reason, in the form checkov's ARM parser reads::

    "metadata": {"checkov": ["skip=CKV_AZURE_206:why this check does not apply"]}

(checkov takes the first check id of each list item and the text after its colon as the
comment; one item per skipped check.)
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner import templates
from provisioner.site import Site

pytestmark = pytest.mark.checkov

CHECKOV_TIMEOUT = 600
NO_COMMENT = "No comment provided"  # what checkov reports for a skip without a reason


def run_checkov(directory: Path) -> dict:
    if importlib.util.find_spec("checkov") is None:
        pytest.fail("checkov is not installed; install the test extra: pip install -e '.[test]'")
    proc = subprocess.run(
        [sys.executable, "-m", "checkov.main", "--framework", "arm", "--skip-download",
         "--compact", "-o", "json", "-d", str(directory)],
        capture_output=True, text=True, timeout=CHECKOV_TIMEOUT, check=False,
    )
    # checkov exits 1 when a check fails; anything else but 0 is checkov itself failing.
    assert proc.returncode in (0, 1), f"checkov exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    assert isinstance(report, dict), f"expected one ARM report, got {proc.stdout[:500]}"
    return report


def declared_skips(document: dict) -> list[str]:
    skips = []
    for resource in document["resources"]:
        skips += resource.get("metadata", {}).get("checkov", [])
    return skips


def test_rendered_templates_pass_checkov(tmp_path):
    home = tmp_path / "site"
    home.mkdir()
    (home / "site.id").write_text("0123456789abcdef\n")
    rendered = templates.render(Site.open(home), templates.Spec("dp1"))
    out = tmp_path / "rendered"
    rendered.write(out)

    report = run_checkov(out)

    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}"
              for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0
    # Both templates were scanned: the resource group and the three resources of the point.
    assert summary["resource_count"] >= 4
    for check in report["results"]["skipped_checks"]:
        comment = check["check_result"].get("suppress_comment") or ""
        assert comment.strip() and comment != NO_COMMENT, (
            f"{check['check_id']} is skipped without a reason")


def test_every_skip_in_the_templates_names_one_check_and_its_reason(tmp_path):
    home = tmp_path / "site"
    home.mkdir()
    rendered = templates.render(Site.open(home), templates.Spec("dp1"))
    skips = [s for which in templates.TEMPLATES for s in declared_skips(rendered.template(which))]
    assert skips, "expected the mission's skips (e.g. CKV_AZURE_206 for LRS storage)"
    for skip in skips:
        assert isinstance(skip, str), skip
        check_id, sep, reason = skip.removeprefix("skip=").partition(":")
        assert skip.startswith("skip=CKV") and sep and len(reason.strip()) > 20, skip
        assert check_id.replace("_", "").isalnum(), skip
