//! Per-organisation limits: how much of the hub one member may use at once.
//!
//! Owns: the limits in force for an organisation (defaults per role, overridden
//! per role by the config file and per organisation by the registry or Admin),
//! the live usage counts per organisation, and their enforcement: concurrent
//! connections, Subscribe streams, Snapshots and Publishes in flight are RAII
//! [`Permit`]s released on drop; the publish rate (events/s with a burst) and the
//! lookup rate are token buckets; a stream that would rather wait for a permit
//! than be refused is woken when one is given back. A refusal is `RESOURCE_EXHAUSTED` naming the
//! limit and its value (with a retry delay for rates) and is counted in metrics
//! per organisation and limit. Must never read certificates, touch storage, or
//! hold a lock across an `.await` (every method here but the wait for a
//! released permit is synchronous).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::registry::{Org, Role};

/// The limits in force for one organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Open TLS connections.
    pub connections: u32,
    /// Open Subscribe streams.
    pub subscribe_streams: u32,
    /// Snapshots being streamed.
    pub snapshots: u32,
    /// Publish calls waiting for their durable answer.
    pub publishes_in_flight: u32,
    /// Events (indicators) published per second, on average.
    pub publish_events_per_second: u32,
    /// Events that may be published at once after a quiet spell.
    pub publish_burst: u32,
    /// Lookups per second (also the burst).
    pub lookups_per_second: u32,
}

impl Limits {
    /// The defaults of a role, before the config file and the registry.
    pub const fn for_role(role: Role) -> Limits {
        match role {
            Role::Regulator | Role::LawEnforcement => Limits {
                connections: 64,
                subscribe_streams: 256,
                snapshots: 8,
                publishes_in_flight: 64,
                publish_events_per_second: 20_000,
                publish_burst: 100_000,
                lookups_per_second: 5_000,
            },
            Role::Bank | Role::Tsp | Role::PaymentOperator => Limits {
                connections: 32,
                subscribe_streams: 64,
                snapshots: 4,
                publishes_in_flight: 32,
                publish_events_per_second: 5_000,
                publish_burst: 20_000,
                lookups_per_second: 2_000,
            },
            Role::Platform => Limits {
                connections: 16,
                subscribe_streams: 32,
                snapshots: 2,
                publishes_in_flight: 16,
                publish_events_per_second: 1_000,
                publish_burst: 5_000,
                lookups_per_second: 1_000,
            },
        }
    }

    /// Connections of a certificate whose organisation is not (yet) registered:
    /// its calls are refused, so it needs few.
    pub const UNREGISTERED_CONNECTIONS: u32 = 4;

    fn with(mut self, o: &LimitOverrides) -> Limits {
        let LimitOverrides {
            connections,
            subscribe_streams,
            snapshots,
            publishes_in_flight,
            publish_events_per_second,
            publish_burst,
            lookups_per_second,
        } = *o;
        let set = |slot: &mut u32, value: Option<u32>| {
            if let Some(value) = value {
                *slot = value;
            }
        };
        set(&mut self.connections, connections);
        set(&mut self.subscribe_streams, subscribe_streams);
        set(&mut self.snapshots, snapshots);
        set(&mut self.publishes_in_flight, publishes_in_flight);
        set(
            &mut self.publish_events_per_second,
            publish_events_per_second,
        );
        set(&mut self.publish_burst, publish_burst);
        set(&mut self.lookups_per_second, lookups_per_second);
        self
    }
}

/// Limits set explicitly (in the config file per role, or per organisation in
/// the registry and through Admin); unset fields keep the value beneath.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe_streams: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishes_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_events_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookups_per_second: Option<u32>,
}

impl LimitOverrides {
    pub fn is_empty(&self) -> bool {
        *self == LimitOverrides::default()
    }
}

/// What a [`Permit`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Concurrent {
    Connections,
    SubscribeStreams,
    Snapshots,
    PublishesInFlight,
}

impl Concurrent {
    /// The limit's name, as in the config file, the registry and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Concurrent::Connections => "connections",
            Concurrent::SubscribeStreams => "subscribe_streams",
            Concurrent::Snapshots => "snapshots",
            Concurrent::PublishesInFlight => "publishes_in_flight",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Concurrent::Connections => "open connections",
            Concurrent::SubscribeStreams => "open Subscribe streams",
            Concurrent::Snapshots => "Snapshots in progress",
            Concurrent::PublishesInFlight => "Publishes awaiting their answer",
        }
    }

    fn limit(self, limits: &Limits) -> u32 {
        match self {
            Concurrent::Connections => limits.connections,
            Concurrent::SubscribeStreams => limits.subscribe_streams,
            Concurrent::Snapshots => limits.snapshots,
            Concurrent::PublishesInFlight => limits.publishes_in_flight,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One organisation's live usage.
#[derive(Default)]
struct Usage {
    open: [AtomicU32; 4],
    /// Woken (one waiter at a time) when a permit is given back.
    released: tokio::sync::Notify,
    publish: Mutex<Bucket>,
    lookup: Mutex<Bucket>,
}

/// A token bucket; `tokens` is refilled lazily from the time elapsed.
#[derive(Default)]
struct Bucket {
    tokens: f64,
    updated: Option<Instant>,
}

impl Bucket {
    /// Takes `n` tokens, or says how long until there are enough.
    fn take(
        &mut self,
        n: u32,
        rate: u32,
        burst: u32,
        now: Instant,
    ) -> std::result::Result<(), Duration> {
        let (rate, burst, n) = (
            f64::from(rate.max(1)),
            f64::from(burst.max(1)),
            f64::from(n),
        );
        self.tokens = match self.updated {
            None => burst,
            Some(then) => (self.tokens + now.duration_since(then).as_secs_f64() * rate).min(burst),
        };
        self.updated = Some(now);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - self.tokens) / rate))
        }
    }
}

/// The hub's limits and every organisation's usage; cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// Per-role overrides from the config file.
    roles: BTreeMap<Role, LimitOverrides>,
    usage: Mutex<HashMap<String, Arc<Usage>>>,
    metrics: Metrics,
}

impl Limiter {
    pub fn new(roles: BTreeMap<Role, LimitOverrides>, metrics: Metrics) -> Limiter {
        Limiter {
            inner: Arc::new(Inner {
                roles,
                usage: Mutex::default(),
                metrics,
            }),
        }
    }

    /// The limits in force for `org`: role default, then config file, then registry.
    pub fn limits(&self, org: &Org) -> Limits {
        let by_role = self.inner.roles.get(&org.role).copied().unwrap_or_default();
        Limits::for_role(org.role).with(&by_role).with(&org.limits)
    }

    fn usage(&self, org_id: &str) -> Arc<Usage> {
        let mut usage = self.inner.usage.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(usage.entry(org_id.to_string()).or_default())
    }

    /// A permit for one more of `what`, or RESOURCE_EXHAUSTED naming the limit.
    pub fn acquire(&self, org: &Org, what: Concurrent) -> Result<Permit> {
        let limit = what.limit(&self.limits(org));
        self.acquire_within(&org.id, what, limit)
    }

    /// A connection permit for an organisation the registry does not know (or
    /// not yet): its calls are refused, but its connections still count.
    pub fn acquire_connection(&self, org_id: &str, org: Option<&Org>) -> Result<Permit> {
        let limit = org.map_or(Limits::UNREGISTERED_CONNECTIONS, |org| {
            self.limits(org).connections
        });
        self.acquire_within(org_id, Concurrent::Connections, limit)
    }

    fn acquire_within(&self, org_id: &str, what: Concurrent, limit: u32) -> Result<Permit> {
        let usage = self.usage(org_id);
        let counter = &usage.open[what.index()];
        let taken = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (open < limit).then_some(open + 1)
        });
        match taken {
            Ok(_) => Ok(Permit { usage, what }),
            Err(open) => Err(self.refused(
                org_id,
                what.name(),
                format!(
                    "{}: {org_id} has {open} {}, its limit is {limit}; close one, or ask the regulator to raise the limit",
                    what.name(),
                    what.what()
                ),
            )),
        }
    }

    /// Resolves when one of the organisation's permits is given back, or after
    /// `at_most` (a wake-up can be taken by another waiter): try again then.
    /// Holds no lock while it waits.
    pub async fn released(&self, org_id: &str, at_most: Duration) {
        let usage = self.usage(org_id);
        let _ = tokio::time::timeout(at_most, usage.released.notified()).await;
    }

    /// Takes `events` from the organisation's publish rate.
    pub fn publish_rate(&self, org: &Org, events: usize) -> Result<()> {
        let limits = self.limits(org);
        let (rate, burst) = (limits.publish_events_per_second, limits.publish_burst);
        let events = u32::try_from(events).unwrap_or(u32::MAX);
        if events > burst {
            return Err(self.refused(
                &org.id,
                "publish_burst",
                format!(
                    "publish_burst: a batch of {events} events is more than {}'s burst of {burst} events; send smaller batches",
                    org.id
                ),
            ));
        }
        let usage = self.usage(&org.id);
        let taken = usage
            .publish
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(events, rate, burst, Instant::now());
        taken.map_err(|wait| {
            self.refused(
                &org.id,
                "publish_events_per_second",
                format!(
                    "publish_events_per_second: {} may publish {rate} events/s (burst {burst}); retry after {} ms",
                    org.id,
                    retry_ms(wait)
                ),
            )
        })
    }

    /// Takes one lookup from the organisation's lookup rate.
    pub fn lookup_rate(&self, org: &Org) -> Result<()> {
        let rate = self.limits(org).lookups_per_second;
        let usage = self.usage(&org.id);
        let taken = usage.lookup.lock().unwrap_or_else(|p| p.into_inner()).take(
            1,
            rate,
            rate,
            Instant::now(),
        );
        taken.map_err(|wait| {
            self.refused(
                &org.id,
                "lookups_per_second",
                format!(
                    "lookups_per_second: {} may look up {rate} indicators/s; retry after {} ms",
                    org.id,
                    retry_ms(wait)
                ),
            )
        })
    }

    fn refused(&self, org_id: &str, limit: &'static str, message: String) -> Error {
        self.inner.metrics.limit_refused(org_id, limit);
        tracing::debug!(org = %org_id, limit, "refused: limit reached");
        Error::ResourceExhausted(message)
    }
}

fn retry_ms(wait: Duration) -> u128 {
    wait.as_millis().max(1)
}

/// One unit of a concurrent limit, given back when dropped.
pub struct Permit {
    usage: Arc<Usage>,
    what: Concurrent,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.usage.open[self.what.index()].fetch_sub(1, Ordering::AcqRel);
        self.usage.released.notify_one();
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("what", &self.what).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::OrgStatus;

    fn bank(overrides: LimitOverrides) -> Org {
        Org {
            id: "bank".into(),
            name: "Bank".into(),
            role: Role::Bank,
            status: OrgStatus::Active,
            limits: overrides,
        }
    }

    #[test]
    fn registry_overrides_config_overrides_role_defaults() {
        let roles = BTreeMap::from([(
            Role::Bank,
            LimitOverrides {
                snapshots: Some(1),
                lookups_per_second: Some(7),
                ..LimitOverrides::default()
            },
        )]);
        let limiter = Limiter::new(roles, Metrics::new());
        let limits = limiter.limits(&bank(LimitOverrides {
            lookups_per_second: Some(9),
            ..LimitOverrides::default()
        }));
        assert_eq!(limits.snapshots, 1);
        assert_eq!(limits.lookups_per_second, 9);
        assert_eq!(
            limits.subscribe_streams,
            Limits::for_role(Role::Bank).subscribe_streams
        );
    }

    #[test]
    fn permits_are_given_back_on_drop_and_refusals_name_the_limit() {
        let limiter = Limiter::new(BTreeMap::new(), Metrics::new());
        let org = bank(LimitOverrides {
            subscribe_streams: Some(2),
            ..LimitOverrides::default()
        });
        let a = limiter
            .acquire(&org, Concurrent::SubscribeStreams)
            .expect("1");
        let _b = limiter
            .acquire(&org, Concurrent::SubscribeStreams)
            .expect("2");
        let refused = limiter
            .acquire(&org, Concurrent::SubscribeStreams)
            .expect_err("3");
        assert!(
            matches!(&refused, Error::ResourceExhausted(m) if m.contains("subscribe_streams") && m.contains("limit is 2"))
        );
        drop(a);
        limiter
            .acquire(&org, Concurrent::SubscribeStreams)
            .expect("a slot is free again");
    }

    #[test]
    fn a_bucket_refills_at_its_rate_and_says_when_to_retry() {
        let start = Instant::now();
        let mut bucket = Bucket::default();
        assert!(bucket.take(10, 100, 10, start).is_ok());
        let wait = bucket.take(5, 100, 10, start).expect_err("empty");
        assert_eq!(wait.as_millis(), 50);
        assert!(
            bucket
                .take(5, 100, 10, start + Duration::from_millis(50))
                .is_ok()
        );
    }
}
