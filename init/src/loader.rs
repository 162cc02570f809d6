//! The module loader: loads the manifest's kernel modules in load order on a thread of its own,
//! each only after PID 1 has verified that module's file, while PID 1 goes on with what needs
//! no module (the rest of the hashing, the TPM). PID 1 waits on it only where a module must be
//! in — a mount ([`ModuleLoader::retry_until_loaded`]) — and before it unseals the node keys
//! ([`ModuleLoader::finish`]: a module load extends PCR 10 under IMA's Secure Boot policy, which
//! would void a policy session in flight). The loading itself is the caller's closure (`finit_module` on
//! the appliance), so the ordering rules are testable anywhere.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use sovereign_boot_contract::manifest::ModuleEntry;

/// How far the loader got.
#[derive(Debug, Default)]
struct Progress {
    /// Modules loaded so far (a prefix of the load order).
    loaded: usize,
    /// Set once the loader stopped: every module loaded, or why not.
    finished: Option<Result<usize, String>>,
}

type Shared = Arc<(Mutex<Progress>, Condvar)>;

/// A running module loader.
#[derive(Debug)]
pub struct ModuleLoader {
    shared: Shared,
    verified: Option<Sender<String>>,
    thread: Option<JoinHandle<()>>,
}

impl ModuleLoader {
    /// Starts loading `modules` in order with `load`; a module waits until its path has been
    /// passed to [`ModuleLoader::verified`].
    pub fn start<L>(modules: Vec<ModuleEntry>, mut load: L) -> Self
    where
        L: FnMut(&ModuleEntry) -> Result<(), String> + Send + 'static,
    {
        let shared: Shared = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let progress = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let finish = |outcome: Result<usize, String>| {
                let (lock, changed) = &*progress;
                lock.lock().unwrap_or_else(PoisonError::into_inner).finished = Some(outcome);
                changed.notify_all();
            };
            let mut verified = BTreeSet::new();
            for (done, module) in modules.iter().enumerate() {
                while !verified.contains(&module.path) {
                    match rx.recv() {
                        Ok(path) => {
                            verified.insert(path);
                        }
                        Err(_) => {
                            return finish(Err(format!("module {}: its file was never verified", module.name)));
                        }
                    }
                }
                if let Err(why) = load(module) {
                    return finish(Err(format!("loading module {}: {why}", module.name)));
                }
                let (lock, changed) = &*progress;
                lock.lock().unwrap_or_else(PoisonError::into_inner).loaded = done + 1;
                changed.notify_all();
            }
            finish(Ok(modules.len()));
        });
        ModuleLoader { shared, verified: Some(tx), thread: Some(thread) }
    }

    /// The file at `path` matched the manifest.
    pub fn verified(&self, path: &str) {
        if let Some(tx) = &self.verified {
            // A loader that already stopped needs no more paths.
            let _ = tx.send(path.to_string());
        }
    }

    /// No more files will be verified: a module whose file was not is an error.
    pub fn no_more_verified(&mut self) {
        self.verified = None;
    }

    /// Runs `attempt` until it succeeds. After a failure it waits for the next module to load
    /// and tries again; once the loader has stopped, a failure is final and returned.
    pub fn retry_until_loaded<T, E>(&self, mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        let (lock, changed) = &*self.shared;
        loop {
            let (loaded, stopped) = {
                let p = lock.lock().unwrap_or_else(PoisonError::into_inner);
                (p.loaded, p.finished.is_some())
            };
            match attempt() {
                Ok(v) => return Ok(v),
                Err(e) if stopped => return Err(e),
                Err(_) => {
                    let p = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    drop(
                        changed
                            .wait_while(p, |p| p.loaded == loaded && p.finished.is_none())
                            .unwrap_or_else(PoisonError::into_inner),
                    );
                }
            }
        }
    }

    /// Waits until the loader stopped: how many modules it loaded, or why it stopped short.
    pub fn finish(mut self) -> Result<usize, String> {
        // Without more paths coming, the loader cannot wait forever for one.
        self.verified = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            return Err("the module loader thread panicked".into());
        }
        let (lock, _) = &*self.shared;
        let finished = lock.lock().unwrap_or_else(PoisonError::into_inner).finished.take();
        finished.unwrap_or_else(|| Err("the module loader stopped without a result".into()))
    }
}
