//! # engine — vmie's tasks
//!
//! The task engine runs imports and exports: it claims tasks from the catalog, moves each
//! through its stages, and keeps the data-protection promise that a task's intermediate data
//! exists only while the task runs, encrypted, and is destroyed however the task ends.
//!
//! This release holds the intermediate volume ([`scratch`]); the pipelines and workers build
//! on it.

pub mod scratch;
