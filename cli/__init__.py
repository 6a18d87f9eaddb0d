"""The ``gsam2`` command line: Grounded SAM 2 over files, in bulk.

gsam2 image --prompt "car. person. dog." --input photos/ --output out/
gsam2 image --detector florence2 --task dense_region_caption --input photos/ --output out/
gsam2 autolabel --input photos/ --output out/
gsam2 video --prompt "car." --input traffic.mp4 --output out/
gsam2 cvat track --task 42          # CVAT_URL, CVAT_USER/CVAT_PASSWORD (or CVAT_ACCESS_TOKEN) in the environment
"""

from .main import build_parser, main
from .options import cli_option, spec_from_args

__all__ = ["build_parser", "cli_option", "main", "spec_from_args"]
