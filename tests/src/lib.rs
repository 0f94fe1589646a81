//! Lab helpers.
