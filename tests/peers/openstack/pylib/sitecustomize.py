"""Test peer only: peer.sh puts this directory on the nova daemons' PYTHONPATH. See kelp_patches.py."""
import kelp_patches  # noqa: F401
