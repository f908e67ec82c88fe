//! Test-only helpers for canopy end-to-end tests.
