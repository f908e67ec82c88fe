//! Test-only in-process Kubernetes API server.
