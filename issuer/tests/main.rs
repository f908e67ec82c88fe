//! canopy-issuer's integration tests, linked into one binary (one link instead of one per
//! file). Each module is one area; run one with `cargo test -p canopy-issuer --test issuer MODULE::`.
// Tests and benchmarks read the wall clock freely (clippy.toml keeps it out of the code).
#![allow(clippy::disallowed_methods)]

mod certmanager_harness;
mod common;
mod istio_common;

mod api;
mod attacks;
mod audit_checkpoints;
mod authz_matrix;
mod certmanager_branches;
mod certmanager_crds;
mod certmanager_e2e;
mod certmanager_kubectl;
mod certmanager_leader;
mod config_file;
mod crash;
mod dev;
mod faults_sqlite;
mod hardening;
mod istio_adopt;
mod istio_bad_inputs;
mod istio_cli;
mod istio_faults;
mod istio_rotation;
mod istio_sync;
mod limits;
mod outage;
mod pg_restart;
mod pkcs11;
mod replicas;
mod soak;
mod store_scale;
mod tls_policy;
