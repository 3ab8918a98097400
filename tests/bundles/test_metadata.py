"""Every bundle's metadata verifies against bundles/metadata_schema.json, through MONAI's `verify_metadata`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from helpers import BUNDLES

SCHEMA = BUNDLES / "metadata_schema.json"
BUNDLE_NAMES = sorted(p.parent.parent.name for p in BUNDLES.glob("*/configs/metadata.json"))


def test_every_bundle_is_checked():
    assert {"seg_guided_diffusion", "siamese_diffusion", "meddiff_ft", "segmentation"} <= set(BUNDLE_NAMES)


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_metadata_verifies_against_schema(bundle, tmp_path):
    from monai.bundle import verify_metadata

    # verify_metadata raises on a schema violation; the schema file is local, so nothing is downloaded
    shutil.copy(SCHEMA, tmp_path / "schema.json")
    verify_metadata(
        meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"), filepath=str(tmp_path / "schema.json")
    )


def test_verify_metadata_command_accepts_good_and_rejects_bad_metadata(tmp_path):
    """The documented command line: exit 0 on a bundle's metadata, non-zero when a required field is missing."""
    meta = BUNDLES / "seg_guided_diffusion" / "configs" / "metadata.json"
    cmd = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta), "--filepath", str(SCHEMA)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "verified with no error" in (r.stdout + r.stderr)
    bad = json.loads(meta.read_text())
    del bad["network_data_format"]["outputs"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    shutil.copy(SCHEMA, tmp_path / "schema.json")
    cmd[cmd.index(str(meta))] = str(tmp_path / "bad.json")
    cmd[cmd.index(str(SCHEMA))] = str(tmp_path / "schema.json")
    assert subprocess.run(cmd, capture_output=True, text=True).returncode != 0
