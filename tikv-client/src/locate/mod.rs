//! The region cache and the store cache.
//!
//! (Module docs to be completed by the region cache's author.)
