//! Call metrics for any driver: calls, errors by label and latency per (driver, verb).
//!
//! [`Metered`] wraps a driver and records into a shared [`CallStats`]; the operator
//! exports a [`CallStats::snapshot`] as Prometheus metrics and tests assert on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::driver::{CloudDriver, CloudError, CreateRequest, Image, InstanceType, Machine};

/// The verbs of [`CloudDriver`], as recorded in [`CallStats`].
pub mod verbs {
    /// [`CloudDriver::instance_types`](crate::CloudDriver::instance_types) and
    /// [`CloudDriver::instance_types_named`](crate::CloudDriver::instance_types_named):
    /// one read of the catalogue, whole or narrow.
    pub const INSTANCE_TYPES: &str = "instance_types";
    /// [`CloudDriver::resolve_image`](crate::CloudDriver::resolve_image).
    pub const RESOLVE_IMAGE: &str = "resolve_image";
    /// [`CloudDriver::release`](crate::CloudDriver::release).
    pub const RELEASE: &str = "release";
    /// [`CloudDriver::create`](crate::CloudDriver::create).
    pub const CREATE: &str = "create";
    /// [`CloudDriver::list`](crate::CloudDriver::list).
    pub const LIST: &str = "list";
    /// [`CloudDriver::delete`](crate::CloudDriver::delete).
    pub const DELETE: &str = "delete";
    /// All of them.
    pub const ALL: [&str; 5] = [INSTANCE_TYPES, RESOLVE_IMAGE, CREATE, LIST, DELETE];
}

/// Totals of one (driver, verb).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallRecord {
    /// The driver's [`CloudDriver::name`].
    pub driver: String,
    /// One of [`verbs`].
    pub verb: String,
    /// Calls made, failed ones included.
    pub calls: u64,
    /// Failed calls by [`CloudError::label`].
    pub errors: BTreeMap<String, u64>,
    /// Sum of the calls' durations.
    pub total_latency: Duration,
    /// The slowest call.
    pub max_latency: Duration,
}

impl CallRecord {
    /// Failed calls, all labels together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Told of every call a [`CallStats`] records, e.g. to feed latency histograms.
pub trait CallObserver: Send + Sync {
    /// One call of `verb` on `driver` that took `latency` and failed with `error` (None:
    /// succeeded).
    fn observe(&self, driver: &str, verb: &str, latency: Duration, error: Option<&CloudError>);
}

/// Shared call counters, keyed by (driver, verb). Cheap to record into from many
/// tasks: one short uncontended lock per call.
#[derive(Default)]
pub struct CallStats {
    records: Mutex<BTreeMap<(String, String), CallRecord>>,
    observer: std::sync::OnceLock<Arc<dyn CallObserver>>,
}

impl std::fmt::Debug for CallStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStats")
            .field("records", &self.lock())
            .field("observer", &self.observer.get().is_some())
            .finish()
    }
}

impl CallStats {
    /// Empty counters, ready to share.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Tells `observer` of every call recorded from now on (the first observer set stays).
    pub fn set_observer(&self, observer: Arc<dyn CallObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Records one call of `verb` on `driver` that took `latency` and failed with
    /// `error` (None: succeeded).
    pub fn record(&self, driver: &str, verb: &str, latency: Duration, error: Option<&CloudError>) {
        if let Some(o) = self.observer.get() {
            o.observe(driver, verb, latency, error);
        }
        let mut records = self.lock();
        let key = (driver.to_string(), verb.to_string());
        let r = records.entry(key).or_insert_with(|| CallRecord {
            driver: driver.to_string(),
            verb: verb.to_string(),
            ..Default::default()
        });
        r.calls += 1;
        r.total_latency += latency;
        r.max_latency = r.max_latency.max(latency);
        if let Some(e) = error {
            *r.errors.entry(e.label().to_string()).or_default() += 1;
        }
    }

    /// Every (driver, verb) seen so far, sorted by driver then verb.
    pub fn snapshot(&self) -> Vec<CallRecord> {
        self.lock().values().cloned().collect()
    }

    /// Calls of every verb on every driver.
    pub fn total_calls(&self) -> u64 {
        self.lock().values().map(|r| r.calls).sum()
    }

    /// Calls of `verb`, all drivers together.
    pub fn calls(&self, verb: &str) -> u64 {
        self.lock()
            .values()
            .filter(|r| r.verb == verb)
            .map(|r| r.calls)
            .sum()
    }

    /// Failed calls of `verb`, all drivers and labels together.
    pub fn errors(&self, verb: &str) -> u64 {
        self.lock()
            .values()
            .filter(|r| r.verb == verb)
            .map(CallRecord::error_count)
            .sum()
    }

    /// Failed calls with error `label` (see [`CloudError::label`]), all drivers and verbs.
    pub fn errors_labelled(&self, label: &str) -> u64 {
        self.lock()
            .values()
            .filter_map(|r| r.errors.get(label))
            .sum()
    }

    /// Forgets everything recorded so far.
    pub fn reset(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), CallRecord>> {
        // Counters stay usable after a panic elsewhere; they hold no invariants.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A driver that records every call into a shared [`CallStats`].
///
/// Works over a concrete driver or an `Arc<dyn CloudDriver>` (drivers behind `Arc`
/// and `Box` are drivers too).
#[derive(Clone, Debug)]
pub struct Metered<D> {
    inner: D,
    stats: Arc<CallStats>,
}

impl<D: CloudDriver> Metered<D> {
    /// Wraps `inner` with fresh counters.
    pub fn new(inner: D) -> Self {
        Self::with_stats(inner, CallStats::new())
    }

    /// Wraps `inner`, recording into `stats` (shared with other drivers or a metrics
    /// exporter).
    pub fn with_stats(inner: D, stats: Arc<CallStats>) -> Self {
        Self { inner, stats }
    }

    /// The counters this wrapper records into.
    pub fn stats(&self) -> &Arc<CallStats> {
        &self.stats
    }

    /// The wrapped driver.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Unwraps the driver.
    pub fn into_inner(self) -> D {
        self.inner
    }

    fn observe<T>(&self, verb: &str, start: Instant, result: &Result<T, CloudError>) {
        let latency = start.elapsed();
        let error = result.as_ref().err();
        if let Some(e) = error {
            tracing::debug!(driver = self.inner.name(), verb, error = %e, "cloud call failed");
        }
        self.stats.record(self.inner.name(), verb, latency, error);
    }
}

#[async_trait]
impl<D: CloudDriver> CloudDriver for Metered<D> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
        let start = Instant::now();
        let r = self.inner.instance_types().await;
        self.observe(verbs::INSTANCE_TYPES, start, &r);
        r
    }

    async fn instance_types_named(
        &self,
        names: &[String],
    ) -> Result<Vec<InstanceType>, CloudError> {
        let start = Instant::now();
        let r = self.inner.instance_types_named(names).await;
        self.observe(verbs::INSTANCE_TYPES, start, &r);
        r
    }

    async fn resolve_image(&self, image: Option<&str>) -> Result<Image, CloudError> {
        let start = Instant::now();
        let r = self.inner.resolve_image(image).await;
        self.observe(verbs::RESOLVE_IMAGE, start, &r);
        r
    }

    async fn create(&self, req: &CreateRequest) -> Result<Vec<Machine>, CloudError> {
        let start = Instant::now();
        let r = self.inner.create(req).await;
        self.observe(verbs::CREATE, start, &r);
        r
    }

    async fn list(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Machine>, CloudError> {
        let start = Instant::now();
        let r = self.inner.list(tags).await;
        self.observe(verbs::LIST, start, &r);
        r
    }

    async fn list_ids(
        &self,
        tags: &BTreeMap<String, String>,
        ids: &[String],
    ) -> Result<Vec<Machine>, CloudError> {
        let start = Instant::now();
        let r = self.inner.list_ids(tags, ids).await;
        self.observe(verbs::LIST, start, &r);
        r
    }

    async fn delete(&self, ids: &[String]) -> Result<(), CloudError> {
        let start = Instant::now();
        let r = self.inner.delete(ids).await;
        self.observe(verbs::DELETE, start, &r);
        r
    }

    async fn release(&self, tags: &BTreeMap<String, String>) -> Result<(), CloudError> {
        let start = Instant::now();
        let r = self.inner.release(tags).await;
        self.observe(verbs::RELEASE, start, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver that fails `delete` with NotFound and sleeps 5 ms in `list`.
    struct Fake;

    #[async_trait]
    impl CloudDriver for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
            Ok(vec![])
        }
        async fn resolve_image(&self, _: Option<&str>) -> Result<Image, CloudError> {
            Err(CloudError::Unauthorized("no".into()))
        }
        async fn create(&self, _: &CreateRequest) -> Result<Vec<Machine>, CloudError> {
            Err(CloudError::QuotaExceeded("cores".into()))
        }
        async fn list(&self, _: &BTreeMap<String, String>) -> Result<Vec<Machine>, CloudError> {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(vec![])
        }
        async fn delete(&self, _: &[String]) -> Result<(), CloudError> {
            Err(CloudError::NotFound("i-1".into()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn counts_calls_errors_and_latency() {
        let m = Metered::new(Fake);
        for _ in 0..3 {
            m.list(&BTreeMap::new()).await.unwrap();
        }
        m.instance_types().await.unwrap();
        m.delete(&["i-1".into()]).await.unwrap_err();
        m.delete(&[]).await.unwrap_err();
        m.create(&CreateRequest::default()).await.unwrap_err();
        m.resolve_image(None).await.unwrap_err();

        let s = m.stats();
        assert_eq!(s.total_calls(), 8);
        assert_eq!(s.calls(verbs::LIST), 3);
        assert_eq!(s.calls(verbs::DELETE), 2);
        assert_eq!(s.errors(verbs::DELETE), 2);
        assert_eq!(s.errors(verbs::LIST), 0);
        assert_eq!(s.errors_labelled("QuotaExceeded"), 1);
        assert_eq!(s.errors_labelled("Unauthorized"), 1);

        let snap = s.snapshot();
        assert_eq!(snap.len(), 5);
        let list = snap.iter().find(|r| r.verb == "list").unwrap();
        assert_eq!(list.driver, "fake");
        assert_eq!(list.total_latency, Duration::from_millis(15));
        assert_eq!(list.max_latency, Duration::from_millis(5));
        let delete = snap.iter().find(|r| r.verb == "delete").unwrap();
        assert_eq!(delete.errors, BTreeMap::from([("NotFound".to_string(), 2)]));

        s.reset();
        assert_eq!(s.total_calls(), 0);
    }

    #[tokio::test]
    async fn wraps_arc_dyn_and_shares_stats() {
        let stats = CallStats::new();
        let dynamic: Arc<dyn CloudDriver> = Arc::new(Fake);
        let a = Metered::with_stats(dynamic, stats.clone());
        let b = Metered::with_stats(Arc::new(Fake) as Arc<dyn CloudDriver>, stats.clone());
        assert_eq!(a.name(), "fake");
        a.instance_types().await.unwrap();
        b.instance_types().await.unwrap();
        // A metered driver is a driver: it can go behind Arc<dyn CloudDriver> again.
        let erased: Arc<dyn CloudDriver> = Arc::new(a);
        erased.instance_types().await.unwrap();
        assert_eq!(stats.calls(verbs::INSTANCE_TYPES), 3);
        assert_eq!(stats.snapshot().len(), 1);
    }

    /// A driver with three types whose narrow read answers only `narrow`.
    struct Narrow;

    #[async_trait]
    impl CloudDriver for Narrow {
        fn name(&self) -> &str {
            "narrow"
        }
        async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
            Ok(["a.small", "b.large", "c.gpu"]
                .into_iter()
                .map(|n| InstanceType {
                    name: n.into(),
                    ..Default::default()
                })
                .collect())
        }
        async fn instance_types_named(
            &self,
            _: &[String],
        ) -> Result<Vec<InstanceType>, CloudError> {
            Ok(vec![InstanceType {
                name: "narrow".into(),
                ..Default::default()
            }])
        }
        async fn resolve_image(&self, _: Option<&str>) -> Result<Image, CloudError> {
            Fake.resolve_image(None).await
        }
        async fn create(&self, r: &CreateRequest) -> Result<Vec<Machine>, CloudError> {
            Fake.create(r).await
        }
        async fn list(&self, t: &BTreeMap<String, String>) -> Result<Vec<Machine>, CloudError> {
            Fake.list(t).await
        }
        async fn list_ids(
            &self,
            _: &BTreeMap<String, String>,
            ids: &[String],
        ) -> Result<Vec<Machine>, CloudError> {
            Ok(ids
                .iter()
                .map(|id| Machine {
                    id: format!("narrow-{id}"),
                    provider_id: String::new(),
                    name: String::new(),
                    instance_type: String::new(),
                    state: crate::driver::MachineState::Running,
                    addresses: vec![],
                    tags: BTreeMap::new(),
                    created_at: String::new(),
                })
                .collect())
        }
        async fn delete(&self, ids: &[String]) -> Result<(), CloudError> {
            Fake.delete(ids).await
        }
    }

    #[tokio::test]
    async fn a_list_by_ids_reaches_the_driver_through_every_wrapper_and_counts_as_a_list() {
        let ids = vec!["i-1".to_string()];
        let tags = BTreeMap::new();
        // The default lists the tags and keeps the IDs (Fake lists nothing).
        let default = Metered::new(Box::new(Fake) as Box<dyn CloudDriver>);
        assert!(default.list_ids(&tags, &ids).await.unwrap().is_empty());
        assert_eq!(default.stats().calls(verbs::LIST), 1);
        // A driver's own read by IDs is reached through Arc, Box and Metered.
        let stats = CallStats::new();
        let wrapped: Arc<dyn CloudDriver> = Arc::new(Metered::with_stats(
            Box::new(Narrow) as Box<dyn CloudDriver>,
            stats.clone(),
        ));
        let got = wrapped.list_ids(&tags, &ids).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "narrow-i-1");
        assert_eq!(stats.calls(verbs::LIST), 1);
    }

    #[tokio::test]
    async fn named_types_reach_the_driver_through_every_wrapper_and_count_once() {
        let names = vec!["B.LARGE".to_string(), "nope".to_string()];
        // The default filters the whole catalogue, ignoring case.
        let default = Metered::new(Box::new(Fake) as Box<dyn CloudDriver>);
        assert!(
            default
                .instance_types_named(&names)
                .await
                .unwrap()
                .is_empty()
        );
        let filtered = Metered::new(Arc::new(NarrowDefault) as Arc<dyn CloudDriver>);
        let got = filtered.instance_types_named(&names).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "b.large");
        assert_eq!(filtered.stats().calls(verbs::INSTANCE_TYPES), 1);
        // A driver's own narrow read is reached through Arc, Box and Metered.
        let stats = CallStats::new();
        let wrapped: Arc<dyn CloudDriver> = Arc::new(Metered::with_stats(
            Box::new(Narrow) as Box<dyn CloudDriver>,
            stats.clone(),
        ));
        let got = wrapped.instance_types_named(&names).await.unwrap();
        assert_eq!(got[0].name, "narrow");
        assert_eq!(stats.calls(verbs::INSTANCE_TYPES), 1);
    }

    /// [`Narrow`]'s catalogue with the trait's default narrow read.
    struct NarrowDefault;

    #[async_trait]
    impl CloudDriver for NarrowDefault {
        fn name(&self) -> &str {
            "default"
        }
        async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
            Narrow.instance_types().await
        }
        async fn resolve_image(&self, _: Option<&str>) -> Result<Image, CloudError> {
            Fake.resolve_image(None).await
        }
        async fn create(&self, r: &CreateRequest) -> Result<Vec<Machine>, CloudError> {
            Fake.create(r).await
        }
        async fn list(&self, t: &BTreeMap<String, String>) -> Result<Vec<Machine>, CloudError> {
            Fake.list(t).await
        }
        async fn delete(&self, ids: &[String]) -> Result<(), CloudError> {
            Fake.delete(ids).await
        }
    }
}
