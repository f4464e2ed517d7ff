//! Filesystem identification (to be written).
