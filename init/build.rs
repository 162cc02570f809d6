//! Links the appliance binary with packed relative relocations (DT_RELR, glibc ≥ 2.36, the
//! image's glibc): a position-independent executable keeps its ASLR while its relocation table
//! shrinks from megabytes to kilobytes — fewer bytes for PID 1 to hash at every boot and fewer
//! relocations for the loader to apply (docs/benchmarks.md, the boot timeline).

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
