"""Kubernetes node agent: the kubelet device plugin that advertises vhost-user ports.

Off the hot path: the hook's stages never import this package (gRPC and protobuf load only
in the ``device-plugin`` command).  What the hook reads from a Kubernetes container's spec
is pure and lives in :mod:`hook.request.kubernetes`.
"""
