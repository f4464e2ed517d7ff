//! Partition tables (to be written).
