//! cloud-init seeds, as bytes: no I/O.
//!
//! - `seed`: validated `SeedSpec` to `meta-data`, `user-data` (merged with the user's own as
//!   MIME multipart) and `network-config` v2; NoCloud and config-drive v2 images.
//! - `iso`: a small ISO 9660 writer with Joliet and Rock Ridge, deterministic (same input,
//!   same bytes), used for NoCloud (`cidata`) and config-drive (`config-2`) seeds.

pub mod iso;
pub mod seed;
pub mod unattend;
