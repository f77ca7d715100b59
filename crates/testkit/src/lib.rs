//! Test kit (filled in next).
