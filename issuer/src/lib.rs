//! canopy-issuer library.
