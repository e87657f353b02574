//! Applying plans: one worker per pod uid, a relist, and the status book.
//!
//! Mechanism:
//! - [`PodRuntime::apply_changes`] hands each desired-pod change to the
//!   pod's worker (started on first sight). Updates coalesce: a worker
//!   that is busy finds only the newest one when it looks, and a pending
//!   stop is never overwritten by a later update ([`merge`]).
//! - A worker loops: plan ([`pod_actions`]) on the newest desired pod and
//!   the newest observation, publish the status, apply the actions, observe
//!   the pod again at once (two filtered list calls), and plan again; when
//!   there is nothing to do it sleeps until the next change, or until a
//!   backoff expires.
//! - [`PodRuntime::relist`] runs every second or so: it lists all
//!   sandboxes and containers, groups them by pod uid and hands each worker
//!   its pod's observation when it changed. Observations carry the instant
//!   their listing started, and a worker keeps only newer ones, so a relist
//!   that began before a worker's own actions cannot make it act twice.
//! - Pods the runtime holds that nobody wants get a worker that stops and
//!   removes them, but only after the first snapshot: before it, the agent
//!   does not know what is wanted, and a restarted agent adopts what runs.
//! - Statuses go into the [`StatusBook`], newest per pod; the session sends
//!   what is new whenever it is connected, and everything again after a
//!   reconnect.
//!
//! - Along the way the worker records what kubelet records as Events
//!   (pulls, creation, start, kills, back-off, probe failures) in the
//!   [`EventSink`], which never blocks, and writes the pod's configMap and
//!   secret volumes whenever what the control plane sent for them changes
//!   (before planning, so a container about to start finds them).
//!
//! Status calls are made once per container and state (exit codes and
//! times do not change afterwards) and once per sandbox for its IPs, so an
//! idle relist costs two list calls.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::Notify;

use super::events::{EventSink, EventType};
use super::observed::{
    group_by_pod, ContainerDetails, ContainerState, ObservedContainer, ObservedPod, ObservedSandbox,
};
use super::plan::{pod_actions, BackoffBook, KillContainer, PodActions, Waiting, BACKOFF_INITIAL};
use super::probe::{probe_specs, run_probe, ProbeCounter, ProbeKind};
use super::spec::{self, Desired, NodeSettings, PodFacts};
use super::status::{pod_status, StatusContext};
use super::volumes::{write_volume, VolumeFiles};
use crate::cri::{Cri, CriError, LABEL_POD_UID};
use crate::session::{Change, DesiredPod};

/// Grace for pods the runtime holds that nobody wants.
pub const ORPHAN_GRACE_SECONDS: i64 = 2;
/// After a failed apply, the worker waits this long (doubling to
/// [`MAX_ERROR_DELAY`]) before trying again, unless something changes.
const FIRST_ERROR_DELAY: Duration = Duration::from_secs(1);
const MAX_ERROR_DELAY: Duration = Duration::from_secs(30);
/// An idle worker re-plans this often anyway.
const IDLE_RESYNC: Duration = Duration::from_secs(60);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind,
    // still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One pod's status as it goes up the node API.
#[derive(Debug, Clone, PartialEq)]
pub struct PodReport {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub status: Value,
    /// Nothing of the pod is left on the node.
    pub terminated: bool,
}

#[derive(Debug)]
struct BookEntry {
    report: PodReport,
    sent: bool,
}

/// The newest status per pod, and which of them the control plane has.
#[derive(Debug, Default)]
pub struct StatusBook {
    entries: Mutex<BTreeMap<String, BookEntry>>,
    changed: Notify,
}

impl StatusBook {
    /// Records a status; nothing happens if it is the one already known.
    pub fn publish(&self, report: PodReport) {
        let mut entries = lock(&self.entries);
        if let Some(known) = entries.get(&report.uid) {
            if known.report == report {
                return;
            }
        }
        entries.insert(
            report.uid.clone(),
            BookEntry {
                report,
                sent: false,
            },
        );
        drop(entries);
        self.changed.notify_one();
    }

    /// The reports not sent yet, marked sent. Terminated pods are then
    /// forgotten: their last report was the final word.
    pub fn take_unsent(&self) -> Vec<PodReport> {
        let mut entries = lock(&self.entries);
        let unsent: Vec<PodReport> = entries
            .values_mut()
            .filter(|e| !e.sent)
            .map(|e| {
                e.sent = true;
                e.report.clone()
            })
            .collect();
        entries.retain(|_, e| !(e.sent && e.report.terminated));
        unsent
    }

    /// A new session: the control plane may have missed anything.
    pub fn resend_all(&self) {
        for entry in lock(&self.entries).values_mut() {
            entry.sent = false;
        }
        self.changed.notify_one();
    }

    /// Resolves when something new was published.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

/// What the runtime showed of a pod, and when the listing began.
#[derive(Debug, Clone)]
struct Observation {
    taken_at: Instant,
    pod: ObservedPod,
}

/// A desired-state update merged into one already pending or current: a
/// stop is never undone by a later update, and a second stop may only
/// shorten the grace period (as a second `kubectl delete` may).
pub fn merge(current: Option<&Desired>, incoming: Desired) -> Desired {
    match current {
        Some(current) if current.stopping() => {
            let mut kept = if incoming.stopping() {
                incoming
            } else {
                current.clone()
            };
            kept.stop_grace_seconds = match (current.stop_grace_seconds, kept.stop_grace_seconds) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            kept
        }
        _ => incoming,
    }
}

/// A probe result that flipped.
#[derive(Debug, Clone)]
struct ProbeFlip {
    container_id: String,
    container: String,
    kind: ProbeKind,
    healthy: bool,
}

#[derive(Default)]
struct Pending {
    desired: Option<Desired>,
    observation: Option<Observation>,
    probes: Vec<ProbeFlip>,
}

struct Slot {
    pending: Mutex<Pending>,
    wake: Notify,
    /// Orphans have no pod object to report to.
    orphan: bool,
}

/// Agent-side memory of one pod, beyond what the runtime shows.
#[derive(Default)]
struct PodMemory {
    restarts: BackoffBook,
    pulls: BackoffBook,
    pull_failures: HashMap<String, Timestamp>,
    waiting: BTreeMap<String, Waiting>,
    error_delay: Option<Duration>,
    /// Probe tasks by container ID.
    probes: HashMap<String, Vec<tokio::task::JoinHandle<()>>>,
    /// Readiness results by container ID.
    readiness: BTreeMap<String, bool>,
    /// Startup results by container ID, for containers with a startup
    /// probe.
    started: BTreeMap<String, bool>,
    /// Containers whose liveness probe failed, by ID.
    unhealthy: BTreeSet<String>,
    /// configMap and secret volume files as last written, by volume.
    volumes_written: BTreeMap<String, VolumeFiles>,
}

impl Drop for PodMemory {
    fn drop(&mut self) {
        for task in self.probes.values().flatten() {
            task.abort();
        }
    }
}

/// What applying a plan ran into.
#[derive(Debug, Default)]
struct Outcome {
    errors: usize,
    retry_after: Option<Duration>,
}

impl Outcome {
    fn retry(&mut self, after: Duration) {
        self.retry_after = Some(self.retry_after.map_or(after, |r| r.min(after)));
    }
}

struct Inner<C: Cri> {
    cri: C,
    node: NodeSettings,
    cgroup_fs: std::path::PathBuf,
    runtime_name: Mutex<String>,
    workers: Mutex<HashMap<String, Arc<Slot>>>,
    /// Set by the first snapshot: from then on, pods nobody wants are
    /// removed.
    desired_known: std::sync::atomic::AtomicBool,
    names: Mutex<HashMap<(String, String), String>>,
    observed: Mutex<HashMap<String, ObservedPod>>,
    details: Mutex<HashMap<(String, ContainerState), ContainerDetails>>,
    sandbox_ips: Mutex<HashMap<String, Vec<String>>>,
    reports: StatusBook,
    events: EventSink,
}

/// The pod runtime; cheap to clone.
pub struct PodRuntime<C: Cri> {
    inner: Arc<Inner<C>>,
}

impl<C: Cri> Clone for PodRuntime<C> {
    fn clone(&self) -> Self {
        PodRuntime {
            inner: self.inner.clone(),
        }
    }
}

/// Where a container's log is, for the log endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    pub path: std::path::PathBuf,
    pub running: bool,
    pub container_id: String,
}

impl<C: Cri> PodRuntime<C> {
    /// `cgroup_fs` is where the cgroup hierarchies are mounted
    /// (`/sys/fs/cgroup`); pods' cgroup directories are removed from there.
    pub fn new(cri: C, node: NodeSettings, cgroup_fs: &Path) -> PodRuntime<C> {
        PodRuntime {
            inner: Arc::new(Inner {
                cri,
                node,
                cgroup_fs: cgroup_fs.to_owned(),
                runtime_name: Mutex::new(String::new()),
                workers: Mutex::new(HashMap::new()),
                desired_known: std::sync::atomic::AtomicBool::new(false),
                names: Mutex::new(HashMap::new()),
                observed: Mutex::new(HashMap::new()),
                details: Mutex::new(HashMap::new()),
                sandbox_ips: Mutex::new(HashMap::new()),
                reports: StatusBook::default(),
                events: EventSink::default(),
            }),
        }
    }

    pub fn cri(&self) -> &C {
        &self.inner.cri
    }

    pub fn reports(&self) -> &StatusBook {
        &self.inner.reports
    }

    /// Events about pods, for the session to send up.
    pub fn events(&self) -> &EventSink {
        &self.inner.events
    }

    /// The runtime as the Node reports it (`containerd://1.6.20`); empty
    /// while it cannot be reached.
    pub async fn runtime_version(&self) -> String {
        match tokio::time::timeout(Duration::from_secs(2), self.inner.cri.version()).await {
            Ok(Ok(version)) => {
                *lock(&self.inner.runtime_name) = version.name.clone();
                format!("{}://{}", version.name, version.version)
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot ask the container runtime for its version");
                String::new()
            }
            Err(_) => String::new(),
        }
    }

    /// Hands desired-pod changes to the pods' workers. `snapshot` says the
    /// changes complete a snapshot: everything wanted is now known.
    pub fn apply_changes(&self, changes: &[(Change, DesiredPod)], snapshot: bool) {
        for (change, pod) in changes {
            let key = (pod.namespace.clone(), pod.name.clone());
            let desired = match Desired::from_pod(pod) {
                Ok(desired) => desired,
                Err(error) => {
                    tracing::error!(pod = %format!("{}/{}", pod.namespace, pod.name), %error, "cannot run this pod");
                    let mut fallback =
                        Desired::orphan(&pod.uid, &pod.namespace, &pod.name, ORPHAN_GRACE_SECONDS);
                    fallback.stop_grace_seconds = match change {
                        Change::Removed => Some(ORPHAN_GRACE_SECONDS),
                        _ => pod.deletion_grace_period_seconds,
                    };
                    if !fallback.stopping() {
                        continue;
                    }
                    fallback
                }
            };
            match change {
                Change::Removed => {
                    let mut stop = desired;
                    if stop.stop_grace_seconds.is_none() {
                        stop.stop_grace_seconds = Some(stop.grace_seconds());
                    }
                    lock(&self.inner.names).remove(&key);
                    // Nothing to stop if no worker ever ran it.
                    if lock(&self.inner.workers).contains_key(&pod.uid) {
                        self.deliver(stop, false);
                    }
                }
                Change::Added | Change::Changed => {
                    lock(&self.inner.names).insert(key, pod.uid.clone());
                    self.deliver(desired, false);
                }
            }
        }
        if snapshot {
            self.inner
                .desired_known
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn deliver(&self, desired: Desired, orphan: bool) {
        let uid = desired.uid.clone();
        let mut workers = lock(&self.inner.workers);
        let slot = workers.entry(uid.clone()).or_insert_with(|| {
            let slot = Arc::new(Slot {
                pending: Mutex::new(Pending::default()),
                wake: Notify::new(),
                orphan,
            });
            tokio::spawn(worker(self.inner.clone(), uid.clone(), slot.clone()));
            slot
        });
        {
            let mut pending = lock(&slot.pending);
            let merged = merge(pending.desired.as_ref(), desired);
            pending.desired = Some(merged);
        }
        slot.wake.notify_one();
    }

    /// Lists everything once and hands each worker its pod; starts stop
    /// workers for pods nobody wants.
    pub async fn relist(
        &self,
        delivered: &mut HashMap<String, ObservedPod>,
    ) -> Result<(), CriError> {
        let taken_at = Instant::now();
        let pods = observe(&self.inner, None).await?;
        let desired_known = self
            .inner
            .desired_known
            .load(std::sync::atomic::Ordering::SeqCst);
        let mut orphans = Vec::new();
        {
            let workers = lock(&self.inner.workers);
            for (uid, slot) in workers.iter() {
                let pod = pods.get(uid).cloned().unwrap_or_default();
                if delivered.get(uid) != Some(&pod) {
                    delivered.insert(uid.clone(), pod.clone());
                    lock(&slot.pending).observation = Some(Observation { taken_at, pod });
                    slot.wake.notify_one();
                }
            }
            for (uid, pod) in &pods {
                if !workers.contains_key(uid) && desired_known {
                    orphans.push((uid.clone(), pod.clone()));
                }
            }
            delivered.retain(|uid, _| workers.contains_key(uid));
        }
        for (uid, pod) in orphans {
            let (namespace, name) = pod
                .sandboxes
                .first()
                .map(|s| (s.namespace.clone(), s.name.clone()))
                .unwrap_or_default();
            tracing::info!(%uid, pod = %format!("{namespace}/{name}"), "removing a pod nobody wants");
            self.deliver(
                Desired::orphan(&uid, &namespace, &name, ORPHAN_GRACE_SECONDS),
                true,
            );
        }
        // Forget cached facts about containers and sandboxes that are gone.
        let live_containers: HashSet<&str> = pods
            .values()
            .flat_map(|p| p.containers.iter().map(|c| c.id.as_str()))
            .collect();
        lock(&self.inner.details).retain(|(id, _), _| live_containers.contains(id.as_str()));
        let live_sandboxes: HashSet<&str> = pods
            .values()
            .flat_map(|p| p.sandboxes.iter().map(|s| s.id.as_str()))
            .collect();
        lock(&self.inner.sandbox_ips).retain(|id, _| live_sandboxes.contains(id.as_str()));
        Ok(())
    }

    /// Relists forever, every `interval`.
    pub async fn run_relist(self, interval: Duration) {
        let mut delivered = HashMap::new();
        let mut available = true;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.relist(&mut delivered).await {
                Ok(()) if !available => {
                    available = true;
                    tracing::info!("the container runtime is reachable again");
                }
                Ok(()) => {}
                Err(error) if available => {
                    available = false;
                    tracing::warn!(%error, "cannot list the container runtime's pods; retrying quietly");
                }
                Err(_) => {}
            }
        }
    }

    /// The log file of a pod's container: the current one, or with
    /// `previous` the one before it.
    pub fn log_target(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        previous: bool,
    ) -> Option<LogTarget> {
        let uid = lock(&self.inner.names)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()?;
        let observed = lock(&self.inner.observed).get(&uid).cloned()?;
        let history = observed.containers_named(container);
        let chosen = history.get(usize::from(previous))?;
        let dir = self
            .inner
            .node
            .log_root
            .join(format!("{namespace}_{name}_{uid}"));
        Some(LogTarget {
            path: dir.join(spec::log_path(container, chosen.attempt)),
            running: chosen.is_running(),
            container_id: chosen.id.clone(),
        })
    }

    /// Whether a container (by runtime ID) still runs, as last observed.
    pub fn is_running(&self, namespace: &str, name: &str, container_id: &str) -> bool {
        let Some(uid) = lock(&self.inner.names)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
        else {
            return false;
        };
        lock(&self.inner.observed).get(&uid).is_some_and(|pod| {
            pod.containers
                .iter()
                .any(|c| c.id == container_id && c.is_running())
        })
    }

    /// The runtime ID of a pod's running container, for exec.
    pub fn running_container(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
    ) -> Option<String> {
        let uid = lock(&self.inner.names)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()?;
        lock(&self.inner.observed).get(&uid).and_then(|pod| {
            pod.latest_container(container)
                .filter(|c| c.is_running())
                .map(|c| c.id.clone())
        })
    }

    /// The runtime ID of a pod's ready sandbox, for port forwarding.
    pub fn ready_sandbox(&self, namespace: &str, name: &str) -> Option<String> {
        let uid = lock(&self.inner.names)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()?;
        lock(&self.inner.observed).get(&uid).and_then(|pod| {
            pod.latest_sandbox()
                .filter(|s| s.ready)
                .map(|s| s.id.clone())
        })
    }
}

/// Lists sandboxes and containers (of one pod, or all) with their details.
async fn observe<C: Cri>(
    inner: &Inner<C>,
    uid: Option<&str>,
) -> Result<BTreeMap<String, ObservedPod>, CriError> {
    let labels: Vec<(&str, &str)> = uid.map(|uid| (LABEL_POD_UID, uid)).into_iter().collect();
    let (sandboxes, containers) = tokio::join!(
        inner.cri.list_pod_sandboxes(&labels),
        inner.cri.list_containers(&labels)
    );
    let mut observed_sandboxes = Vec::new();
    for sandbox in sandboxes? {
        // Sandboxes without our labels belong to someone else.
        let Ok(mut sandbox) = ObservedSandbox::try_from(sandbox) else {
            continue;
        };
        let known = lock(&inner.sandbox_ips).get(&sandbox.id).cloned();
        sandbox.ips = match known {
            Some(ips) => ips,
            None if sandbox.ready => match inner.cri.pod_sandbox_ips(&sandbox.id).await {
                Ok(ips) => {
                    lock(&inner.sandbox_ips).insert(sandbox.id.clone(), ips.clone());
                    ips
                }
                Err(error) => {
                    tracing::debug!(%error, sandbox = %sandbox.id, "no IPs for a sandbox yet");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        observed_sandboxes.push(sandbox);
    }
    let mut observed_containers = Vec::new();
    for container in containers? {
        let state = ContainerState::from_cri(container.state);
        let key = (container.id.clone(), state);
        let known = lock(&inner.details).get(&key).cloned();
        let details = match known {
            Some(details) => details,
            None => match inner.cri.container_status(&container.id).await {
                Ok(status) => {
                    let details = ContainerDetails::from(status);
                    lock(&inner.details).insert(key, details.clone());
                    details
                }
                // Removed between the list and the status call.
                Err(error) if error.is_not_found() => continue,
                Err(error) => return Err(error),
            },
        };
        if let Ok(observed) = ObservedContainer::from_cri(container, details) {
            observed_containers.push(observed);
        }
    }
    Ok(group_by_pod(observed_sandboxes, observed_containers))
}

async fn observe_pod<C: Cri>(inner: &Inner<C>, uid: &str) -> Result<Observation, CriError> {
    let taken_at = Instant::now();
    let mut pods = observe(inner, Some(uid)).await?;
    let pod = pods.remove(uid).unwrap_or_default();
    lock(&inner.observed).insert(uid.to_owned(), pod.clone());
    Ok(Observation { taken_at, pod })
}

/// One pod's worker (see the module documentation).
async fn worker<C: Cri>(inner: Arc<Inner<C>>, uid: String, slot: Arc<Slot>) {
    let mut desired: Option<Desired> = None;
    let mut observed: Option<Observation> = None;
    let mut memory = PodMemory::default();
    loop {
        {
            let mut pending = lock(&slot.pending);
            if let Some(update) = pending.desired.take() {
                desired = Some(merge(desired.as_ref(), update));
            }
            if let Some(observation) = pending.observation.take() {
                if observed
                    .as_ref()
                    .is_none_or(|known| observation.taken_at > known.taken_at)
                {
                    lock(&inner.observed).insert(uid.clone(), observation.pod.clone());
                    observed = Some(observation);
                }
            }
            for flip in pending.probes.drain(..) {
                apply_probe_flip(&mut memory, &uid, flip);
            }
        }
        let Some(pod) = desired.clone() else {
            slot.wake.notified().await;
            continue;
        };
        if !pod.stopping() && !slot.orphan {
            sync_volume_files(&inner, &pod, &mut memory);
        }
        if observed.is_none() {
            match observe_pod(&inner, &uid).await {
                Ok(observation) => observed = Some(observation),
                // A pod to stop while the runtime is unreachable, and never
                // seen in it: nothing is known to run, so the stop is
                // reported complete rather than holding the deletion up
                // for as long as the runtime is away. Should containers of
                // it turn up later, the relist finds them wanted by nobody
                // and removes them.
                Err(error) if pod.stopping() && error.is_unavailable() => {
                    tracing::warn!(%error, pod = %format!("{}/{}", pod.namespace, pod.name), "the runtime is unreachable; reporting the pod's stop as complete");
                    observed = Some(Observation {
                        taken_at: Instant::now(),
                        pod: ObservedPod::default(),
                    });
                }
                Err(error) => {
                    let delay = next_error_delay(&mut memory);
                    tracing::warn!(%error, pod = %format!("{}/{}", pod.namespace, pod.name), retry_in_ms = delay.as_millis() as u64, "cannot observe the pod");
                    wait(&slot, Some(delay)).await;
                    continue;
                }
            }
        }
        let Some(observation) = observed.clone() else {
            continue;
        };
        let now = Timestamp::now();
        sync_probes(&inner, &slot, &pod, &observation.pod, &mut memory);
        let mut actions = pod_actions(&pod, &observation.pod, &memory.restarts, now);
        let sick = liveness_kills(&pod, &observation.pod, &memory.unhealthy, &actions);
        actions.kill.extend(sick);
        if !slot.orphan {
            record_backoffs(&inner.events, &pod, &actions);
        }
        publish(
            &inner,
            &slot,
            &pod,
            &observation.pod,
            &memory,
            &actions,
            false,
        );
        if actions.terminated {
            publish(
                &inner,
                &slot,
                &pod,
                &observation.pod,
                &memory,
                &actions,
                true,
            );
            cleanup_host(&inner, &pod);
            // Leave only if nothing new arrived meanwhile; otherwise the
            // new update is planned like any other.
            let mut workers = lock(&inner.workers);
            let pending = lock(&slot.pending);
            if pending.desired.is_none() {
                workers.remove(&uid);
                lock(&inner.observed).remove(&uid);
                tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), %uid, "pod stopped and removed");
                return;
            }
            continue;
        }
        if !actions.has_work() {
            let resync = actions
                .resync_after
                .or(memory.error_delay)
                .unwrap_or(IDLE_RESYNC);
            wait(&slot, Some(resync)).await;
            continue;
        }
        let outcome = apply(&inner, &pod, &observation.pod, &actions, &mut memory, now).await;
        match observe_pod(&inner, &uid).await {
            Ok(fresh) => observed = Some(fresh),
            Err(error) => tracing::warn!(%error, %uid, "cannot observe the pod after acting on it"),
        }
        // After errors, back off (sooner if the plan itself asked for a
        // retry); after a clean pass, wait only if the plan asked to.
        let retry_in = if outcome.errors > 0 {
            let delay = next_error_delay(&mut memory);
            Some(outcome.retry_after.map_or(delay, |r| r.min(delay)))
        } else {
            memory.error_delay = None;
            outcome.retry_after
        };
        if let Some(after) = retry_in {
            if let Some(observation) = &observed {
                let actions =
                    pod_actions(&pod, &observation.pod, &memory.restarts, Timestamp::now());
                publish(
                    &inner,
                    &slot,
                    &pod,
                    &observation.pod,
                    &memory,
                    &actions,
                    false,
                );
            }
            wait(&slot, Some(after)).await;
        }
    }
}

/// Writes the pod's configMap and secret volumes whose files changed since
/// they were last written. Running containers see the new files through
/// their bind mount; nothing restarts.
fn sync_volume_files<C: Cri>(inner: &Inner<C>, pod: &Desired, memory: &mut PodMemory) {
    for (volume, files) in &pod.volume_files {
        if memory.volumes_written.get(volume) == Some(files) {
            continue;
        }
        let dir = spec::config_volume_dir(pod, &inner.node, volume);
        let version = Timestamp::now()
            .strftime("%Y_%m_%d_%H_%M_%S.%f")
            .to_string();
        match write_volume(&dir, volume, files, &version) {
            Ok(()) => {
                tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), %volume, files = files.files.len(), "volume files written");
                memory.volumes_written.insert(volume.clone(), files.clone());
            }
            Err(error) => {
                tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), %error, "cannot write a volume's files");
                inner.events.record(
                    &pod.pod_ref(),
                    "",
                    EventType::Warning,
                    "FailedMount",
                    &format!("MountVolume.SetUp failed for volume \"{volume}\" : {error}"),
                );
            }
        }
    }
}

/// A `BackOff` event for each container held back by its crash-loop
/// backoff, worded as kubelet words it.
fn record_backoffs(events: &EventSink, pod: &Desired, actions: &PodActions) {
    for (container, waiting) in &actions.waiting {
        if waiting.reason == "CrashLoopBackOff" {
            events.container(
                &pod.pod_ref(),
                container,
                EventType::Warning,
                "BackOff",
                &format!(
                    "Back-off restarting failed container {container} in pod {}_{}({})",
                    pod.name, pod.namespace, pod.uid
                ),
            );
        }
    }
}

fn next_error_delay(memory: &mut PodMemory) -> Duration {
    let delay = memory
        .error_delay
        .map_or(FIRST_ERROR_DELAY, |d| (d * 2).min(MAX_ERROR_DELAY));
    memory.error_delay = Some(delay);
    delay
}

async fn wait(slot: &Slot, timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => {
            let _ = tokio::time::timeout(timeout, slot.wake.notified()).await;
        }
        None => slot.wake.notified().await,
    }
}

fn apply_probe_flip(memory: &mut PodMemory, uid: &str, flip: ProbeFlip) {
    // A result about a container already gone is moot.
    if !memory.probes.contains_key(&flip.container_id) {
        return;
    }
    match flip.kind {
        ProbeKind::Startup if flip.healthy => {
            tracing::info!(%uid, container = %flip.container, "startup probe succeeded");
            memory.started.insert(flip.container_id.clone(), true);
            // The startup task is done; the next probe sync starts the
            // liveness and readiness probes.
            for task in memory
                .probes
                .remove(&flip.container_id)
                .into_iter()
                .flatten()
            {
                task.abort();
            }
        }
        ProbeKind::Startup => {
            tracing::info!(%uid, container = %flip.container, "startup probe failed; the container will be restarted");
            memory.unhealthy.insert(flip.container_id);
        }
        ProbeKind::Readiness => {
            tracing::info!(%uid, container = %flip.container, ready = flip.healthy, "readiness changed");
            memory.readiness.insert(flip.container_id, flip.healthy);
        }
        ProbeKind::Liveness if flip.healthy => {
            memory.unhealthy.remove(&flip.container_id);
        }
        ProbeKind::Liveness => {
            tracing::info!(%uid, container = %flip.container, "liveness probe failed; the container will be restarted");
            memory.unhealthy.insert(flip.container_id);
        }
    }
}

/// Running containers whose liveness probe failed, to stop: they then
/// restart under the pod's restart policy.
fn liveness_kills(
    pod: &Desired,
    observed: &ObservedPod,
    unhealthy: &BTreeSet<String>,
    actions: &PodActions,
) -> Vec<KillContainer> {
    if pod.stopping() || actions.kill_pod.is_some() {
        return Vec::new();
    }
    observed
        .containers
        .iter()
        .filter(|c| c.is_running() && unhealthy.contains(&c.id))
        .filter(|c| !actions.kill.iter().any(|k| k.id == c.id))
        .map(|c| KillContainer {
            id: c.id.clone(),
            name: c.name.clone(),
            grace_seconds: pod.grace_seconds(),
            reason: "its liveness probe failed",
        })
        .collect()
}

/// Starts probe tasks for running containers that have probes, and stops
/// those of containers that no longer run.
fn sync_probes<C: Cri>(
    inner: &Arc<Inner<C>>,
    slot: &Arc<Slot>,
    pod: &Desired,
    observed: &ObservedPod,
    memory: &mut PodMemory,
) {
    let running: HashMap<&str, &ObservedContainer> = observed
        .containers
        .iter()
        .filter(|c| c.is_running() && !pod.stopping())
        .map(|c| (c.id.as_str(), c))
        .collect();
    let gone: Vec<String> = memory
        .probes
        .keys()
        .filter(|id| !running.contains_key(id.as_str()))
        .cloned()
        .collect();
    for id in gone {
        for task in memory.probes.remove(&id).into_iter().flatten() {
            task.abort();
        }
        memory.readiness.remove(&id);
        memory.started.remove(&id);
        memory.unhealthy.remove(&id);
    }
    let ip = observed
        .sandboxes
        .iter()
        .find(|s| s.ready)
        .and_then(|s| s.ips.first())
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .or_else(|| {
            pod.host_network()
                .then(|| inner.node.host_ip.as_deref()?.parse().ok())
                .flatten()
        });
    for (id, container) in running {
        if memory.probes.contains_key(id) {
            continue;
        }
        let Some(spec) = pod
            .spec
            .containers
            .iter()
            .find(|c| c.name == container.name)
        else {
            continue;
        };
        let (mut specs, errors) = probe_specs(spec);
        let has_started = memory.started.get(id).copied();
        if has_started.is_none() {
            // Reported once per container, on its first sync.
            for error in errors {
                tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), container = %container.name, %error, "probe not run");
            }
        }
        let startup = specs.iter().any(|p| p.kind == ProbeKind::Startup);
        match (startup, has_started) {
            // Only the startup probe runs until it succeeds.
            (true, None | Some(false)) => {
                memory.started.insert(id.to_owned(), false);
                if specs.iter().any(|p| p.kind == ProbeKind::Readiness) {
                    memory.readiness.insert(id.to_owned(), false);
                }
                specs.retain(|p| p.kind == ProbeKind::Startup);
            }
            _ => specs.retain(|p| p.kind != ProbeKind::Startup),
        }
        let mut tasks = Vec::new();
        for probe in specs {
            if probe.kind == ProbeKind::Readiness && !startup {
                memory.readiness.insert(id.to_owned(), false);
            }
            let (inner, slot) = (inner.clone(), slot.clone());
            let (id, name) = (id.to_owned(), container.name.clone());
            let pod_ref = pod.pod_ref();
            tasks.push(tokio::spawn(async move {
                let mut counter = ProbeCounter::new(probe.kind);
                tokio::time::sleep(probe.initial_delay).await;
                let kind = match probe.kind {
                    ProbeKind::Startup => "Startup",
                    ProbeKind::Liveness => "Liveness",
                    ProbeKind::Readiness => "Readiness",
                };
                loop {
                    let result = run_probe(&inner.cri, &probe, &id, ip).await;
                    if let Err(why) = &result {
                        inner.events.container(
                            &pod_ref,
                            &name,
                            EventType::Warning,
                            "Unhealthy",
                            &format!("{kind} probe failed: {why}"),
                        );
                    }
                    if let Some(healthy) = counter.record(result.is_ok(), &probe) {
                        lock(&slot.pending).probes.push(ProbeFlip {
                            container_id: id.clone(),
                            container: name.clone(),
                            kind: probe.kind,
                            healthy,
                        });
                        slot.wake.notify_one();
                    }
                    tokio::time::sleep(probe.period).await;
                }
            }));
        }
        memory.probes.insert(id.to_owned(), tasks);
    }
}

fn publish<C: Cri>(
    inner: &Inner<C>,
    slot: &Slot,
    pod: &Desired,
    observed: &ObservedPod,
    memory: &PodMemory,
    actions: &PodActions,
    terminated: bool,
) {
    if slot.orphan {
        return;
    }
    let mut waiting = memory.waiting.clone();
    waiting.extend(actions.waiting.clone());
    let runtime_name = lock(&inner.runtime_name).clone();
    let context = StatusContext {
        host_ip: inner.node.host_ip.as_deref(),
        runtime_name: &runtime_name,
        waiting: &waiting,
        readiness: &memory.readiness,
        started: &memory.started,
    };
    let status = serde_json::to_value(pod_status(pod, observed, &context)).unwrap_or_default();
    inner.reports.publish(PodReport {
        uid: pod.uid.clone(),
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        status,
        terminated,
    });
}

/// Removes what the node made for a pod: its volumes, logs and cgroup.
fn cleanup_host<C: Cri>(inner: &Inner<C>, pod: &Desired) {
    let node = &inner.node;
    for dir in [node.pod_dir(&pod.uid), node.log_directory(pod)] {
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, dir = %dir.display(), "cannot remove a pod directory");
            }
        }
    }
    if let Some(parent) = node.cgroup_parent(&pod.uid) {
        remove_cgroup(&inner.cgroup_fs, &parent);
    }
}

/// Removes an (empty) cgroup directory from every hierarchy: runc removes
/// a container's own cgroup but not the pod's directory above it.
pub fn remove_cgroup(cgroup_fs: &Path, parent: &str) {
    let relative = parent.trim_start_matches('/');
    let mut candidates = vec![cgroup_fs.join(relative)];
    if let Ok(entries) = std::fs::read_dir(cgroup_fs) {
        candidates.extend(entries.flatten().map(|e| e.path().join(relative)));
    }
    for dir in candidates {
        if dir.is_dir() {
            if let Err(error) = std::fs::remove_dir(&dir) {
                tracing::debug!(%error, dir = %dir.display(), "cannot remove a pod cgroup");
            }
        }
    }
}

fn image_pull_policy(container: &k8s_openapi::api::core::v1::Container, image: &str) -> String {
    if let Some(policy) = container.image_pull_policy.as_deref() {
        return policy.to_owned();
    }
    // Kubernetes' default: Always for :latest or no tag, else IfNotPresent.
    let last = image.rsplit('/').next().unwrap_or(image);
    let pinned = image.contains('@') || (last.contains(':') && !last.ends_with(":latest"));
    if pinned {
        "IfNotPresent".into()
    } else {
        "Always".into()
    }
}

/// Makes sure a container's image is there; `Err` holds the waiting state.
async fn ensure_image<C: Cri>(
    inner: &Inner<C>,
    pod: &Desired,
    container: &k8s_openapi::api::core::v1::Container,
    memory: &mut PodMemory,
    now: Timestamp,
    outcome: &mut Outcome,
) -> Result<(), Waiting> {
    let image = container.image.clone().unwrap_or_default();
    let policy = image_pull_policy(container, &image);
    let pod_ref = pod.pod_ref();
    let event = |event_type, reason: &str, message: String| {
        inner
            .events
            .container(&pod_ref, &container.name, event_type, reason, &message)
    };
    let present = match inner.cri.image_id(&image).await {
        Ok(id) => id.is_some(),
        Err(error) => {
            outcome.errors += 1;
            return Err(Waiting {
                reason: "ErrImagePull".into(),
                message: error.to_string(),
            });
        }
    };
    if present && policy != "Always" {
        event(
            EventType::Normal,
            "Pulled",
            format!("Container image \"{image}\" already present on machine"),
        );
        return Ok(());
    }
    if !present && policy == "Never" {
        event(
            EventType::Warning,
            "ErrImageNeverPull",
            format!("Container image \"{image}\" is not present with pull policy of Never"),
        );
        return Err(Waiting {
            reason: "ErrImageNeverPull".into(),
            message: format!(
                "Container image \"{image}\" is not present with pull policy of Never"
            ),
        });
    }
    if let Some(failed) = memory.pull_failures.get(&image) {
        if let Some(wait) = memory.pulls.remaining(&image, *failed, now) {
            outcome.retry(wait);
            event(
                EventType::Normal,
                "BackOff",
                format!("Back-off pulling image \"{image}\""),
            );
            return Err(Waiting {
                reason: "ImagePullBackOff".into(),
                message: format!("Back-off pulling image \"{image}\""),
            });
        }
    }
    tracing::info!(%image, "pulling an image");
    event(
        EventType::Normal,
        "Pulling",
        format!("Pulling image \"{image}\""),
    );
    let started = Instant::now();
    match inner.cri.pull_image(&image).await {
        Ok(_) => {
            memory.pull_failures.remove(&image);
            event(
                EventType::Normal,
                "Pulled",
                format!(
                    "Successfully pulled image \"{image}\" in {:.3}s",
                    started.elapsed().as_secs_f64()
                ),
            );
            Ok(())
        }
        // An image present locally is good enough when the registry is
        // out of reach, as with kubelet's Always on an air-gapped node.
        Err(_) if present => Ok(()),
        Err(error) => {
            memory.pulls.next(&image, now, now);
            memory.pull_failures.insert(image.clone(), now);
            outcome.retry(memory.pulls.delay(&image).unwrap_or(BACKOFF_INITIAL));
            tracing::warn!(%image, %error, "cannot pull an image");
            event(
                EventType::Warning,
                "Failed",
                format!("Failed to pull image \"{image}\": {error}"),
            );
            Err(Waiting {
                reason: "ErrImagePull".into(),
                message: error.to_string(),
            })
        }
    }
}

/// Applies a plan: stops first, then removals, then the sandbox, then the
/// containers in spec order.
async fn apply<C: Cri>(
    inner: &Inner<C>,
    pod: &Desired,
    observed: &ObservedPod,
    actions: &PodActions,
    memory: &mut PodMemory,
    now: Timestamp,
) -> Outcome {
    let cri = &inner.cri;
    let pod_name = format!("{}/{}", pod.namespace, pod.name);
    let pod_ref = pod.pod_ref();
    let event = |container: &str, event_type, reason: &str, message: String| {
        inner
            .events
            .container(&pod_ref, container, event_type, reason, &message)
    };
    let mut outcome = Outcome::default();
    let failed = |what: &str, error: CriError, outcome: &mut Outcome| {
        // Something already gone is what was wanted.
        if !error.is_not_found() {
            tracing::warn!(pod = %pod_name, %error, "{what}");
            outcome.errors += 1;
        }
    };

    if let Some(kill) = actions.kill_pod {
        tracing::info!(pod = %pod_name, grace_seconds = kill.grace_seconds, remove = kill.remove, "stopping the pod");
        let stops = observed
            .containers
            .iter()
            .filter(|c| c.is_running() || c.state == ContainerState::Created)
            .map(|c| {
                if c.is_running()
                    && !pod.uid.is_empty()
                    && pod.spec.containers.iter().any(|s| s.name == c.name)
                {
                    event(
                        &c.name,
                        EventType::Normal,
                        "Killing",
                        format!("Stopping container {}", c.name),
                    );
                }
                cri.stop_container(&c.id, kill.grace_seconds)
            });
        for result in futures_util::future::join_all(stops).await {
            if let Err(error) = result {
                failed("cannot stop a container", error, &mut outcome);
            }
        }
        for sandbox in &observed.sandboxes {
            if sandbox.ready || kill.remove {
                if let Err(error) = cri.stop_pod_sandbox(&sandbox.id).await {
                    failed("cannot stop a sandbox", error, &mut outcome);
                }
            }
        }
        if kill.remove {
            for container in &observed.containers {
                if let Err(error) = cri.remove_container(&container.id).await {
                    failed("cannot remove a container", error, &mut outcome);
                }
            }
            for sandbox in &observed.sandboxes {
                if let Err(error) = cri.remove_pod_sandbox(&sandbox.id).await {
                    failed("cannot remove a sandbox", error, &mut outcome);
                }
            }
            return outcome;
        }
    }

    let kills = actions.kill.iter().map(|kill| {
        tracing::info!(pod = %pod_name, container = %kill.name, reason = kill.reason, "stopping a container");
        let message = if kill.reason.contains("liveness") {
            format!(
                "Container {} failed liveness probe, will be restarted",
                kill.name
            )
        } else {
            format!("Stopping container {}", kill.name)
        };
        event(&kill.name, EventType::Normal, "Killing", message);
        cri.stop_container(&kill.id, kill.grace_seconds)
    });
    for result in futures_util::future::join_all(kills).await {
        if let Err(error) = result {
            failed("cannot stop a container", error, &mut outcome);
        }
    }
    for id in &actions.remove_containers {
        if let Err(error) = cri.remove_container(id).await {
            failed("cannot remove a container", error, &mut outcome);
        }
    }
    for id in &actions.remove_sandboxes {
        if let Err(error) = cri.remove_pod_sandbox(id).await {
            failed("cannot remove a sandbox", error, &mut outcome);
        }
    }
    if actions.start.is_empty() {
        return outcome;
    }

    let node = &inner.node;
    for dir in spec::host_dirs(pod, node) {
        if let Err(error) = std::fs::create_dir_all(&dir) {
            tracing::warn!(pod = %pod_name, %error, dir = %dir.display(), "cannot create a pod directory");
            outcome.errors += 1;
            return outcome;
        }
    }
    let (sandbox_id, attempt, ips) = match (actions.create_sandbox, &actions.sandbox_id) {
        (Some(attempt), _) => {
            let config = spec::sandbox_config(pod, attempt, node);
            let started = Instant::now();
            let id = match cri.run_pod_sandbox(config).await {
                Ok(id) => id,
                Err(error) => {
                    failed("cannot create the pod sandbox", error, &mut outcome);
                    return outcome;
                }
            };
            let ips = match cri.pod_sandbox_ips(&id).await {
                Ok(ips) => ips,
                Err(error) => {
                    failed("cannot read the sandbox's IPs", error, &mut outcome);
                    Vec::new()
                }
            };
            lock(&inner.sandbox_ips).insert(id.clone(), ips.clone());
            tracing::info!(pod = %pod_name, sandbox = %id, ips = ?ips, elapsed_ms = started.elapsed().as_millis() as u64, "pod sandbox ready");
            (id, attempt, ips)
        }
        (None, Some(id)) => {
            let sandbox = observed.sandboxes.iter().find(|s| &s.id == id);
            (
                id.clone(),
                sandbox.map_or(0, |s| s.attempt),
                sandbox.map(|s| s.ips.clone()).unwrap_or_default(),
            )
        }
        (None, None) => return outcome,
    };
    let sandbox_config = spec::sandbox_config(pod, attempt, node);
    let facts = PodFacts { pod_ips: ips };
    for start in &actions.start {
        let Some(container) = pod.spec.containers.iter().find(|c| c.name == start.name) else {
            continue;
        };
        // Kubernetes mounts volumes before it pulls; a volume whose source
        // does not exist holds the container until the pod is sent again.
        if let Some(message) = pod.missing_volume(container) {
            outcome.errors += 1;
            inner
                .events
                .record(&pod_ref, "", EventType::Warning, "FailedMount", &message);
            memory.waiting.insert(
                start.name.clone(),
                Waiting {
                    reason: "ContainerCreating".into(),
                    message,
                },
            );
            continue;
        }
        if let Err(waiting) = ensure_image(inner, pod, container, memory, now, &mut outcome).await {
            memory.waiting.insert(start.name.clone(), waiting);
            continue;
        }
        let config = match spec::container_config(pod, container, start.attempt, node, &facts) {
            Ok(config) => config,
            Err(error) => {
                outcome.errors += 1;
                let message = error.to_string();
                event(
                    &start.name,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                memory.waiting.insert(
                    start.name.clone(),
                    Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message,
                    },
                );
                continue;
            }
        };
        if let Some(exit) = start.previous_exit {
            memory.restarts.next(&start.name, exit, now);
        }
        let id = match cri
            .create_container(&sandbox_id, config, sandbox_config.clone())
            .await
        {
            Ok(id) => id,
            Err(error) => {
                event(
                    &start.name,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {error}"),
                );
                memory.waiting.insert(
                    start.name.clone(),
                    Waiting {
                        reason: "CreateContainerError".into(),
                        message: error.to_string(),
                    },
                );
                failed("cannot create a container", error, &mut outcome);
                continue;
            }
        };
        event(
            &start.name,
            EventType::Normal,
            "Created",
            format!("Created container {}", start.name),
        );
        if let Err(error) = cri.start_container(&id).await {
            event(
                &start.name,
                EventType::Warning,
                "Failed",
                format!("Error: {error}"),
            );
            memory.waiting.insert(
                start.name.clone(),
                Waiting {
                    reason: "RunContainerError".into(),
                    message: error.to_string(),
                },
            );
            failed("cannot start a container", error, &mut outcome);
            continue;
        }
        memory.waiting.remove(&start.name);
        event(
            &start.name,
            EventType::Normal,
            "Started",
            format!("Started container {}", start.name),
        );
        tracing::info!(pod = %pod_name, container = %start.name, restart = start.attempt, id = %id, "container started");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeCri;
    use crate::runtime::spec::tests_support::{desired, node};
    use crate::runtime::volumes::Unresolved;
    use serde_json::json;

    fn pod(uid: &str, name: &str, spec: Value) -> DesiredPod {
        DesiredPod {
            uid: uid.into(),
            namespace: "default".into(),
            name: name.into(),
            spec,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            deletion_grace_period_seconds: None,
            resource_version: "1".into(),
            volumes: BTreeMap::new(),
            unresolved: Vec::new(),
        }
    }

    fn webapp() -> Value {
        json!({"containers": [{"name": "web", "image": "skiff.local/webapp:1.0"}]})
    }

    fn runtime(fake: &FakeCri) -> (tempfile::TempDir, PodRuntime<FakeCri>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = node();
        settings.log_root = dir.path().join("logs");
        settings.data_dir = dir.path().join("data");
        settings.cgroup_root = None;
        let runtime = PodRuntime::new(fake.clone(), settings, &dir.path().join("cgroup"));
        (dir, runtime)
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    fn last_report(runtime: &PodRuntime<FakeCri>, uid: &str) -> Option<PodReport> {
        lock(&runtime.inner.reports.entries)
            .get(uid)
            .map(|e| e.report.clone())
    }

    fn phase(runtime: &PodRuntime<FakeCri>, uid: &str) -> String {
        last_report(runtime, uid)
            .and_then(|r| r.status["phase"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn a_pending_stop_is_never_overwritten() {
        let run = desired(webapp());
        let mut stop = run.clone();
        stop.stop_grace_seconds = Some(30);
        assert!(merge(Some(&stop), run.clone()).stopping());
        let mut shorter = run.clone();
        shorter.stop_grace_seconds = Some(5);
        assert_eq!(merge(Some(&stop), shorter).stop_grace_seconds, Some(5));
        let mut longer = run.clone();
        longer.stop_grace_seconds = Some(60);
        assert_eq!(merge(Some(&stop), longer).stop_grace_seconds, Some(30));
        assert!(!merge(Some(&run), run.clone()).stopping());
        assert!(merge(None, stop.clone()).stopping());
    }

    #[test]
    fn the_status_book_sends_changes_once_and_everything_after_a_reconnect() {
        let book = StatusBook::default();
        let report = |phase: &str, terminated| PodReport {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
            status: json!({"phase": phase}),
            terminated,
        };
        book.publish(report("Pending", false));
        book.publish(report("Running", false));
        assert_eq!(book.take_unsent(), [report("Running", false)]);
        book.publish(report("Running", false));
        assert!(
            book.take_unsent().is_empty(),
            "an unchanged status is not sent again"
        );
        book.resend_all();
        assert_eq!(book.take_unsent().len(), 1);
        book.publish(report("Running", true));
        assert_eq!(book.take_unsent().len(), 1);
        book.resend_all();
        assert!(
            book.take_unsent().is_empty(),
            "terminated pods are forgotten once sent"
        );
    }

    #[tokio::test]
    async fn a_pod_runs_and_its_status_goes_up() {
        let fake = FakeCri::with_images(&["skiff.local/webapp:1.0"]);
        let (_dir, runtime) = runtime(&fake);
        runtime.apply_changes(&[(Change::Added, pod("u1", "web", webapp()))], true);
        until("the pod runs", || phase(&runtime, "u1") == "Running").await;
        let report = last_report(&runtime, "u1").expect("report");
        assert_eq!(report.status["podIP"], "10.244.0.2");
        assert_eq!(report.status["containerStatuses"][0]["ready"], true);
        let calls = fake.calls();
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("RunPodSandbox"))
                .count(),
            1,
            "{calls:?}"
        );
        assert!(
            calls.contains(&"StartContainer web/0".to_owned()),
            "{calls:?}"
        );
        assert!(
            !calls.iter().any(|c| c.starts_with("PullImage")),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn a_restarted_agent_adopts_running_pods_and_kills_nothing() {
        let fake = FakeCri::with_images(&["skiff.local/webapp:1.0"]);
        let (_dir, first) = runtime(&fake);
        first.apply_changes(&[(Change::Added, pod("u1", "web", webapp()))], true);
        until("the pod runs", || phase(&first, "u1") == "Running").await;
        let before = fake.calls().len();

        // A new agent process: same runtime state, nothing remembered.
        let (_dir2, second) = runtime(&fake);
        let mut delivered = HashMap::new();
        second.relist(&mut delivered).await.expect("relist");
        second.apply_changes(&[(Change::Added, pod("u1", "web", webapp()))], true);
        second.relist(&mut delivered).await.expect("relist");
        until("the adopted pod is reported", || {
            phase(&second, "u1") == "Running"
        })
        .await;
        let after: Vec<String> = fake.calls()[before..].to_vec();
        assert!(
            after
                .iter()
                .all(|c| c.starts_with("List") || c.starts_with("Status")),
            "the restarted agent changed something: {after:?}"
        );
    }

    #[tokio::test]
    async fn pods_nobody_wants_are_removed_after_the_snapshot_only() {
        let fake = FakeCri::with_images(&["skiff.local/webapp:1.0"]);
        let (_dir, first) = runtime(&fake);
        first.apply_changes(&[(Change::Added, pod("u9", "old", webapp()))], true);
        until("the pod runs", || phase(&first, "u9") == "Running").await;

        let (_dir2, second) = runtime(&fake);
        let mut delivered = HashMap::new();
        second.relist(&mut delivered).await.expect("relist");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            fake.running_containers(),
            1,
            "nothing is removed before a snapshot"
        );

        second.apply_changes(&[], true);
        second.relist(&mut delivered).await.expect("relist");
        until("the orphan is gone", || fake.is_empty()).await;
        let calls = fake.calls();
        assert!(
            calls.iter().any(|c| c == "StopContainer web/0 timeout=2"),
            "{calls:?}"
        );
        assert!(
            last_report(&second, "u9").is_none(),
            "orphans are not reported"
        );
    }

    #[tokio::test]
    async fn deletion_stops_with_the_grace_period_then_reports_terminated() {
        let fake = FakeCri::with_images(&["skiff.local/webapp:1.0"]);
        let (dir, runtime) = runtime(&fake);
        runtime.apply_changes(&[(Change::Added, pod("u1", "web", webapp()))], true);
        until("the pod runs", || phase(&runtime, "u1") == "Running").await;
        assert!(dir.path().join("logs/default_web_u1/web").is_dir());

        let mut deleting = pod("u1", "web", webapp());
        deleting.deletion_grace_period_seconds = Some(7);
        runtime.apply_changes(&[(Change::Changed, deleting.clone())], false);
        // A late update without the deletion must not revive it.
        runtime.apply_changes(&[(Change::Changed, pod("u1", "web", webapp()))], false);
        until("the stop is reported", || {
            last_report(&runtime, "u1").is_some_and(|r| r.terminated)
        })
        .await;
        assert!(fake.is_empty());
        let calls = fake.calls();
        assert!(
            calls.contains(&"StopContainer web/0 timeout=7".to_owned()),
            "{calls:?}"
        );
        assert!(!dir.path().join("logs/default_web_u1").exists());
    }

    #[tokio::test]
    async fn probes_drive_readiness_and_restart_unhealthy_containers() {
        let fake = FakeCri::with_images(&["skiff.local/webapp:1.0"]);
        let (_dir, runtime) = runtime(&fake);
        let spec = json!({"containers": [
            {"name": "ready", "image": "skiff.local/webapp:1.0",
             "readinessProbe": {"exec": {"command": ["true"]}}},
            {"name": "never", "image": "skiff.local/webapp:1.0",
             "readinessProbe": {"exec": {"command": ["false"]}}},
            {"name": "sick", "image": "skiff.local/webapp:1.0",
             "livenessProbe": {"exec": {"command": ["false"]}, "failureThreshold": 1, "periodSeconds": 1}},
            {"name": "late", "image": "skiff.local/webapp:1.0",
             "startupProbe": {"exec": {"command": ["true", "started"]}},
             "readinessProbe": {"exec": {"command": ["true", "ready"]}}},
        ]});
        runtime.apply_changes(&[(Change::Added, pod("u1", "probed", spec))], true);
        let status_of = |name: &str| {
            last_report(&runtime, "u1").and_then(|r| {
                r.status["containerStatuses"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
            })
        };
        until("the probed container is ready", || {
            status_of("ready").is_some_and(|c| c["ready"] == true)
        })
        .await;
        until("the unhealthy container restarted", || {
            status_of("sick").is_some_and(|c| c["restartCount"].as_u64() >= Some(1))
        })
        .await;
        until("the late container started and became ready", || {
            status_of("late").is_some_and(|c| c["started"] == true && c["ready"] == true)
        })
        .await;
        let calls = fake.calls();
        let first = |needle: &str| calls.iter().position(|c| c == needle);
        assert!(
            first("ExecSync late/0 true started") < first("ExecSync late/0 true ready"),
            "readiness ran before startup succeeded: {calls:?}"
        );
        let never = status_of("never").expect("status");
        assert_eq!(never["ready"], false);
        assert!(never["state"]["running"].is_object());
        let report = last_report(&runtime, "u1").expect("report");
        let ready = report.status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            .expect("Ready condition");
        assert_eq!(ready["status"], "False");
        assert!(fake
            .calls()
            .iter()
            .any(|c| c.starts_with("StopContainer sick/0")));
    }

    fn events_of(runtime: &PodRuntime<FakeCri>) -> Vec<(String, String)> {
        runtime
            .events()
            .take()
            .into_iter()
            .map(|e| (e.reason, e.message))
            .collect()
    }

    #[tokio::test]
    async fn volumes_are_written_and_unresolved_references_wait_for_a_resend() {
        let fake = FakeCri::with_images(&["skiff.local/webapp:1.0"]);
        let (dir, runtime) = runtime(&fake);
        let spec = json!({"containers": [{"name": "web", "image": "skiff.local/webapp:1.0",
            "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]});
        let mut waiting = pod("u1", "web", spec.clone());
        waiting.unresolved = vec![Unresolved {
            container: "web".into(),
            volume: String::new(),
            message: "configmap \"cfg\" not found".into(),
        }];
        waiting.volumes.insert(
            "cfg".into(),
            VolumeFiles {
                files: [("mode".to_owned(), b"slow".to_vec())].into(),
                modes: [("mode".to_owned(), 0o644)].into(),
            },
        );
        runtime.apply_changes(&[(Change::Added, waiting.clone())], true);
        let waiting_reason = || {
            last_report(&runtime, "u1").and_then(|r| {
                r.status["containerStatuses"][0]["state"]["waiting"]["reason"]
                    .as_str()
                    .map(str::to_owned)
            })
        };
        until("the container waits on its config", || {
            waiting_reason().as_deref() == Some("CreateContainerConfigError")
        })
        .await;
        let report = last_report(&runtime, "u1").expect("report");
        assert_eq!(
            report.status["containerStatuses"][0]["state"]["waiting"]["message"],
            "configmap \"cfg\" not found"
        );
        let volume = dir.path().join("data/pods/u1/volumes/cfg");
        assert_eq!(
            std::fs::read_to_string(volume.join("mode")).expect("file"),
            "slow"
        );
        assert!(events_of(&runtime)
            .contains(&("Failed".into(), "Error: configmap \"cfg\" not found".into())));

        // The control plane resolves it and sends the pod again.
        let mut resolved = pod("u1", "web", spec);
        resolved.spec["containers"][0]["env"][0]["value"] = json!("fast");
        resolved.volumes = waiting.volumes.clone();
        runtime.apply_changes(&[(Change::Changed, resolved.clone())], false);
        until("the pod runs", || phase(&runtime, "u1") == "Running").await;
        let reasons: Vec<String> = events_of(&runtime).into_iter().map(|e| e.0).collect();
        for reason in ["Pulled", "Created", "Started"] {
            assert!(reasons.iter().any(|r| r == reason), "{reasons:?}");
        }
        let starts = fake
            .calls()
            .iter()
            .filter(|c| c.starts_with("StartContainer"))
            .count();

        // A changed ConfigMap: new files, no restart.
        resolved.spec["containers"][0]["env"][0]["value"] = json!("changed");
        resolved.volumes.get_mut("cfg").expect("cfg").files =
            [("mode".to_owned(), b"changed".to_vec())].into();
        runtime.apply_changes(&[(Change::Changed, resolved)], false);
        until("the file changes", || {
            std::fs::read_to_string(volume.join("mode")).ok().as_deref() == Some("changed")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let starts_after = fake
            .calls()
            .iter()
            .filter(|c| c.starts_with("StartContainer"))
            .count();
        assert_eq!(starts, starts_after, "nothing restarted");
    }

    #[tokio::test]
    async fn exited_containers_restart_and_failed_pulls_are_reported() {
        let fake = FakeCri::with_images(&["skiff.local/webapp:1.0"]);
        let (_dir, runtime) = runtime(&fake);
        runtime.apply_changes(&[(Change::Added, pod("u1", "web", webapp()))], true);
        until("the pod runs", || phase(&runtime, "u1") == "Running").await;
        fake.exit_container("web", 0, 137);
        let mut delivered = HashMap::new();
        runtime.relist(&mut delivered).await.expect("relist");
        until("the container restarted", || {
            last_report(&runtime, "u1").is_some_and(|r| {
                r.status["containerStatuses"][0]["restartCount"] == 1
                    && r.status["containerStatuses"][0]["state"]["running"].is_object()
            })
        })
        .await;
        let report = last_report(&runtime, "u1").expect("report");
        assert_eq!(
            report.status["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            137
        );

        runtime.apply_changes(
            &[(
                Change::Added,
                pod(
                    "u2",
                    "missing",
                    json!({"containers": [{"name": "c", "image": "registry.invalid/nope:1"}]}),
                ),
            )],
            false,
        );
        until("the pull failure is reported", || {
            last_report(&runtime, "u2").is_some_and(|r| {
                let reason = &r.status["containerStatuses"][0]["state"]["waiting"]["reason"];
                reason == "ErrImagePull" || reason == "ImagePullBackOff"
            })
        })
        .await;
        assert_eq!(phase(&runtime, "u2"), "Pending");
        let pulls = fake
            .calls()
            .iter()
            .filter(|c| c.as_str() == "PullImage registry.invalid/nope:1")
            .count();
        assert_eq!(pulls, 1, "the second try waits out the pull backoff");
    }
}
