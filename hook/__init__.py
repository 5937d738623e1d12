"""dpdk-oci-hook: an OCI hook that wires DPDK containers to a host DPDK switch.

Kept empty on purpose: every container start imports this package.
"""
