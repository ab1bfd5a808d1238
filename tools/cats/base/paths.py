"""Well-known locations, derived from this file so they work from any working directory."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_DIR = REPO_ROOT / "proto"
# Data sets laid beside the repository (not committed: too large and separately licensed).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ETTH2_CSV = SHARED_DATA / "ETT" / "ETTh2.csv"
