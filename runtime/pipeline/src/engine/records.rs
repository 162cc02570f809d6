//! What the engine keeps on the data partition: run records, the deployment state, the
//! policies in force, and the listing of runs.

use super::*; // the engine's types, helpers and imports: one engine, several rooms

impl Engine {
    /// Every stored run, newest first, at most [`MAX_LISTED_RUNS`]. A record that does not
    /// open fails the listing (it names the record) rather than being left out. Runs open in
    /// memory are read from there; the others from the store, without entering the cache.
    pub(super) fn runs(&self) -> Result<Vec<RunSummary>, EngineError> {
        let ids: Vec<String> =
            self.store.record_names().into_iter().filter_map(|n| n.strip_prefix("run-").map(str::to_string)).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let stored;
            let run = match self.runs.get(&id) {
                Some(open) => open,
                None => {
                    stored = self.read_run(&id)?;
                    &stored
                }
            };
            let r = &run.report;
            out.push(RunSummary {
                run_id: r.run_id.clone(),
                pipeline: r.pipeline.clone(),
                started_ms: r.snapshot.timestamp_ms,
                stages_done: r.stages.len(),
                total_stages: r.total_stages,
                status: r.status.clone(),
            });
        }
        out.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then_with(|| a.run_id.cmp(&b.run_id)));
        out.truncate(MAX_LISTED_RUNS);
        Ok(out)
    }

    /// Every policy bundle a run was ever started under (kept so that a bundle exported after a
    /// restart still carries the policies its decisions were made under).
    /// Keeps the role certificates a governed request presents (once each), for the bundle's
    /// `role-certificates/` section: an auditor checks every decision's roles against them.
    pub(super) fn keep_certificates(&self, certificates: &[&RoleCertificate]) -> Result<(), EngineError> {
        for cert in certificates {
            let bytes = serde_json::to_vec(cert).map_err(EngineError::encode("a role certificate"))?;
            self.put_record_once(&format!("role-{}", certificate_file(cert)), &bytes)?;
        }
        Ok(())
    }

    /// Keeps a revocation list the first time it is installed, with the time it was.
    pub(super) fn keep_revocations(&self, list: &RevocationList) -> Result<(), EngineError> {
        let installed = InstalledRevocations { installed_ms: now_ms(), list: list.clone() };
        let bytes = serde_json::to_vec(&installed).map_err(EngineError::encode("a revocation list"))?;
        self.put_record_once(&format!("role-{}", revocations_file(&installed)), &bytes)
    }

    /// Stores `bytes` under `name` unless a record of that name exists (the first one stays).
    fn put_record_once(&self, name: &str, bytes: &[u8]) -> Result<(), EngineError> {
        if self.store.get_record(name)?.is_none() {
            self.store.put_record(name, bytes)?;
        }
        Ok(())
    }

    /// Every stored record whose name starts with `prefix`: (name, bytes).
    fn records_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
        let mut out = Vec::new();
        for name in self.store.record_names().into_iter().filter(|n| n.starts_with(prefix)) {
            let bytes = self.store.get_record(&name)?.ok_or_else(|| EngineError::CorruptRecord {
                what: format!("record {name}"),
                why: "listed, then gone".into(),
            })?;
            out.push((name, bytes));
        }
        Ok(out)
    }

    /// The `role-certificates/` section: (file name, bytes) of every certificate and
    /// revocation list kept.
    pub(super) fn role_evidence(&self) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
        let kept = self.records_with_prefix("role-")?;
        Ok(kept.into_iter().map(|(name, bytes)| (name.trim_start_matches("role-").to_string(), bytes)).collect())
    }

    pub(super) fn policies(&self) -> Result<Vec<PolicyBundle>, EngineError> {
        let mut out = Vec::new();
        for (name, bytes) in self.records_with_prefix("policy-")? {
            out.push(
                PolicyBundle::from_json(&bytes)
                    .map_err(|e| EngineError::CorruptRecord { what: format!("record {name}"), why: e.to_string() })?,
            );
        }
        Ok(out)
    }

    pub(super) fn load_run(&mut self, run_id: &str) -> Result<&mut Run, EngineError> {
        if !run_id.bytes().all(|b| b.is_ascii_hexdigit()) || run_id.len() != 32 {
            return Err(EngineError::invalid(format!("{run_id:?} is not a run ID (32 hex characters)")));
        }
        if !self.runs.contains_key(run_id) {
            let run = self.read_run(run_id)?;
            if self.runs.len() >= MAX_OPEN_RUNS
                && let Some(oldest) = self.runs.keys().next().cloned()
            {
                self.runs.remove(&oldest);
            }
            self.runs.insert(run_id.into(), run);
        }
        self.runs.get_mut(run_id).ok_or_else(|| EngineError::UnknownRun(run_id.into()))
    }

    /// A run as stored (not cached). The engine advances a run to completion, failure or a pause
    /// within one call, and keeps it in memory meanwhile: a run stored as running belongs to a
    /// runtime that stopped while it ran, and reads back as interrupted.
    pub(super) fn read_run(&self, run_id: &str) -> Result<Run, EngineError> {
        let bytes =
            self.store.get_record(&format!("run-{run_id}"))?.ok_or_else(|| EngineError::UnknownRun(run_id.into()))?;
        let mut run: Run = serde_json::from_slice(&bytes).map_err(|e| EngineError::CorruptRecord {
            what: format!("run {run_id}: stored record"),
            why: e.to_string(),
        })?;
        if run.report.status == RunStatus::Running {
            let stage = run.pipeline.stages.get(run.next).map(|s| s.name.clone()).unwrap_or_default();
            run.report.status = RunStatus::Interrupted { stage, in_flight: run.in_flight.is_some() };
        }
        Ok(run)
    }

    pub(super) fn save_run(&self, run: &Run) -> Result<(), EngineError> {
        let bytes = serde_json::to_vec(run).map_err(EngineError::encode("a run record"))?;
        Ok(self.store.put_record(&format!("run-{}", run.report.run_id), &bytes)?)
    }

    /// The deployment state.
    pub fn deployment(&self) -> Result<Deployment, EngineError> {
        match self.store.get_record("deployment")? {
            None => Ok(Deployment::default()),
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| EngineError::CorruptRecord { what: "deployment record".into(), why: e.to_string() }),
        }
    }

    pub(super) fn save_deployment(&self, d: &Deployment) -> Result<(), EngineError> {
        Ok(self
            .store
            .put_record("deployment", &serde_json::to_vec(d).map_err(EngineError::encode("the deployment"))?)?)
    }
}
