//! canopy's end-to-end tests across real processes (pkictl, canopy-issuer, openssl, Go
//! checkers, the real control plane), linked into one binary. Run one area with
//! `cargo test --test e2e MODULE::`.
// Tests and benchmarks read the wall clock freely (clippy.toml keeps it out of the code).
#![allow(clippy::disallowed_methods)]

#[path = "chart/helm.rs"]
mod helm;

mod chart_install;
mod chart_render;
mod core_interop;
mod faults_pkictl;
mod key_hygiene;
mod name_constraints;
mod pkictl_ceremony;
mod pkictl_inspect_rotation;
mod pkictl_pkcs11;
mod pkictl_refusals;
mod pkictl_terminal;
mod real_cert_manager;
mod real_cert_manager_attacks;
mod real_cluster;
mod real_csr_api;
mod real_istio;
mod real_jwt;
mod real_leader;
mod real_pod_certificates;
mod walkthrough;
