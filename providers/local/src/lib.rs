//! Local provider (work in progress).
