//! `sovereign-image`: everything that turns binaries and keys into a bootable, signed
//! Sovereign image — development keys, the signed manifest, the initramfs, the UKI, PCR
//! prediction, the signed PCR policy and reference values, the raw disk image and the update
//! bundle of a built image ([`update`]).
//!
//! Pure: [`manifest`], [`cpio`], [`pe`]. Edges: [`keys`] (key files), [`build`] (external
//! tools: apt-get, dpkg-deb, kmod, ldd, objcopy, mkfs.vfat, mtools, sfdisk).
//!
//! Invariants: the initramfs holds exactly the nodes the manifest lists plus the manifest and
//! its signature; two builds from the same inputs give bit-identical UKIs; predicted PCRs are
//! computed from the bytes that boot.
//! Must never: put a shell, an interpreter or any executable other than PID 1, the runtime and
//! the dynamic loader with their libraries into an image; overwrite existing keys.

#![forbid(unsafe_code)]

pub mod build;
pub mod cpio;
pub mod gpu_driver;
pub mod keys;
/// The signed manifest (it lives in the boot contract PID 1 and the runtime share).
pub use sovereign_boot_contract::manifest;
pub mod pe;
pub mod update;
