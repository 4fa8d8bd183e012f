"""peermesh on Kubernetes: sidecar injection (sans-IO) and the admission webhook's shell.

:mod:`.inject` turns a pod template into one with the agent; :mod:`.admission` answers
AdmissionReview v1 requests with a JSONPatch; :mod:`.webhook` serves them over TLS.
"""
