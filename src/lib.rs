//! canopy core.
