//! Guest images built offline from distribution packages.
//!
//! - `recipe`: what goes into an image, as data (packages, files written into the tree,
//!   units masked, partition layout, GRUB configuration); its hash names the build, so a
//!   build is reused until the recipe changes.
//! - `build`: carries a recipe out with mmdebstrap, mke2fs/mkfs.fat (writing filesystems
//!   straight into partitions of a plain file: no loop devices, no mounts), grub-mkimage
//!   (BIOS and UEFI boot code) and qemu-img, reporting each stage.

pub mod build;
pub mod recipe;
