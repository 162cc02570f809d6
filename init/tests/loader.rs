//! The module loader: modules load in the manifest's order and each only after its file was
//! verified, whatever order the files verify in; a module whose file never verified, or whose
//! loading fails, stops the loader with its name; a mount waits for the modules it needs and
//! fails for good only once the loader has stopped.

#![allow(clippy::unwrap_used)] // test code

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sovereign_boot_contract::manifest::ModuleEntry;
use sovereign_init::loader::ModuleLoader;

fn modules(names: &[&str]) -> Vec<ModuleEntry> {
    names.iter().map(|n| ModuleEntry { name: (*n).into(), path: format!("/lib/{n}.ko") }).collect()
}

/// A loader whose "loading" records the module's name.
fn recording(names: &[&str]) -> (ModuleLoader, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let loader = ModuleLoader::start(modules(names), move |m| {
        sink.lock().unwrap().push(m.name.clone());
        Ok(())
    });
    (loader, log)
}

#[test]
fn modules_load_in_order_and_only_once_verified() {
    let (mut loader, log) = recording(&["virtio", "virtio_blk", "ext4"]);
    // The last module's file verifies first: nothing may load yet.
    loader.verified("/lib/ext4.ko");
    loader.verified("/lib/unrelated.so");
    std::thread::sleep(Duration::from_millis(50));
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    loader.verified("/lib/virtio_blk.ko");
    std::thread::sleep(Duration::from_millis(50));
    assert!(log.lock().unwrap().is_empty(), "loaded before virtio was verified: {:?}", log.lock().unwrap());
    loader.verified("/lib/virtio.ko");
    loader.no_more_verified();
    assert_eq!(loader.finish(), Ok(3));
    assert_eq!(*log.lock().unwrap(), ["virtio", "virtio_blk", "ext4"]);
}

#[test]
fn an_unverified_or_failing_module_stops_the_loader_with_its_name() {
    let (mut loader, log) = recording(&["virtio", "ext4"]);
    loader.verified("/lib/virtio.ko");
    loader.no_more_verified();
    assert_eq!(loader.finish(), Err("module ext4: its file was never verified".to_string()));
    assert_eq!(*log.lock().unwrap(), ["virtio"]);

    let loader = ModuleLoader::start(modules(&["virtio", "ext4", "vfat"]), |m| {
        if m.name == "ext4" { Err("Required key not available".into()) } else { Ok(()) }
    });
    for m in ["virtio", "ext4", "vfat"] {
        loader.verified(&format!("/lib/{m}.ko"));
    }
    assert_eq!(loader.finish(), Err("loading module ext4: Required key not available".to_string()));
}

#[test]
fn a_mount_waits_for_its_modules_and_fails_for_good_only_once_the_loader_stopped() {
    let (mut loader, log) = recording(&["virtio_blk", "vfat", "nls_cp437"]);
    let feeder = {
        let paths: Vec<String> = ["virtio_blk", "vfat", "nls_cp437"].iter().map(|m| format!("/lib/{m}.ko")).collect();
        // Verified one by one, later than the first attempt.
        move |loader: &ModuleLoader| {
            for p in &paths {
                std::thread::sleep(Duration::from_millis(20));
                loader.verified(p);
            }
        }
    };
    let mut attempts = 0;
    std::thread::scope(|s| {
        s.spawn(|| feeder(&loader));
        // "The mount" succeeds once vfat and its code page are in.
        let mounted = loader.retry_until_loaded(|| {
            attempts += 1;
            let loaded = log.lock().unwrap().clone();
            if loaded.contains(&"vfat".to_string()) && loaded.contains(&"nls_cp437".to_string()) {
                Ok(loaded.len())
            } else {
                Err("ENODEV")
            }
        });
        assert_eq!(mounted, Ok(3));
    });
    assert!(attempts >= 2, "the first attempt cannot have succeeded ({attempts} attempts)");
    loader.no_more_verified();
    assert_eq!(loader.finish(), Ok(3));

    // Needs a module the manifest does not list: fails once every module is in, not before.
    let (loader, log) = recording(&["virtio_blk"]);
    loader.verified("/lib/virtio_blk.ko");
    let result: Result<(), &str> = loader.retry_until_loaded(|| Err("unknown filesystem type 'btrfs'"));
    assert_eq!(result, Err("unknown filesystem type 'btrfs'"));
    assert_eq!(*log.lock().unwrap(), ["virtio_blk"]);
    assert_eq!(loader.finish(), Ok(1));
}
