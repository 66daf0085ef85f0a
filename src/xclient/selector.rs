//! Which instance gets a call: the [`Selector`] trait, what it is told
//! ([`SelectContext`]), the built-in policies and [`hash_key`].
//!
//! All of it is at `geerpc::xclient::...`; the crate root re-exports only
//! [`SelectMode`]. Selectors run on every call: nothing here may allocate
//! per call, dial, or import from the pool.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::discovery::Snapshot;

thread_local! {
    /// Spreading calls needs no unpredictability: a fast generator per
    /// thread, seeded once from the OS-seeded thread generator, instead of
    /// a cryptographic one on every call.
    static SPREAD_RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A uniform draw from `0..n` (`n > 0`).
fn draw(n: usize) -> usize {
    SPREAD_RNG.with_borrow_mut(|rng| rng.random_range(0..n))
}

/// What a [`Selector`] knows about one call besides the instance list.
///
/// The slices are indexed like `snapshot.instances`. The XClient makes
/// one for every pick; to test a selector, make one with
/// [`SelectContext::new`] and the `with_` methods. The fields are public
/// to read; more may come, so it cannot be built with a struct literal
/// outside this crate.
///
/// ```
/// use geerpc::xclient::{Instance, SelectContext, Selector, Snapshot, P2cSelector};
///
/// let two = vec![Instance::new("127.0.0.1:7001"), Instance::new("127.0.0.1:7002")];
/// let snap = Snapshot::new(1, two);
/// let ctx = SelectContext::new("Arith.Sum", &[5, 0], &[true, true]).with_key(b"user-42");
/// assert_eq!(ctx.key, Some(&b"user-42"[..]));
/// assert_eq!(P2cSelector.select(&snap, &ctx), Some(1));
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SelectContext<'a> {
    /// `Service.Method` of the call.
    pub service_method: &'a str,
    /// The key given with the call, for key-affine selection.
    pub key: Option<&'a [u8]>,
    /// Calls this client has in flight on each instance.
    pub inflight: &'a [usize],
    /// Whether each instance may be picked: false for an instance evicted
    /// after a failure, going away, refusing calls as over a limit (for
    /// its back-off, see
    /// [`XClientBuilder::overload_backoff`](crate::xclient::XClientBuilder::overload_backoff)),
    /// or already tried by this call, unless every candidate is one of
    /// those.
    pub available: &'a [bool],
    /// The available instance whose connection's reader handed the calling
    /// thread the reply of its previous blocking call while handing out a
    /// batch of replies, if it did.
    ///
    /// That reader writes the next requests of the callers it woke in one
    /// go: a call sent to `home` can join that write, where a call sent
    /// elsewhere costs a write of its own and wakes another server. `None`
    /// when the thread read its own reply, when its previous call went
    /// through [`XClient::go`](crate::XClient::go) or failed, and for a
    /// retry or backup within a call.
    pub home: Option<usize>,
}

impl<'a> SelectContext<'a> {
    /// The context of a call to `service_method`, with `inflight` calls on
    /// each instance and `available` saying which may be picked (both
    /// indexed like the snapshot's instances); no key and no home.
    pub fn new(
        service_method: &'a str,
        inflight: &'a [usize],
        available: &'a [bool],
    ) -> SelectContext<'a> {
        SelectContext {
            service_method,
            key: None,
            inflight,
            available,
            home: None,
        }
    }

    /// The same context with the call's key.
    pub fn with_key(mut self, key: &'a [u8]) -> SelectContext<'a> {
        self.key = Some(key);
        self
    }

    /// The same context with the calling thread's
    /// [`home`](SelectContext::home) instance.
    pub fn with_home(mut self, home: usize) -> SelectContext<'a> {
        self.home = Some(home);
        self
    }

    /// How many instances may be picked.
    pub fn available_count(&self) -> usize {
        self.available.iter().filter(|a| **a).count()
    }

    /// The `n`-th available instance (0-based), as an index into the list.
    pub fn nth_available(&self, n: usize) -> Option<usize> {
        self.available
            .iter()
            .enumerate()
            .filter(|(_, a)| **a)
            .nth(n)
            .map(|(i, _)| i)
    }

    /// The first available instance at or after `start`, wrapping around.
    pub fn next_available(&self, start: usize) -> Option<usize> {
        let n = self.available.len();
        (0..n).map(|k| (start + k) % n).find(|&i| self.available[i])
    }
}

/// Picks one instance for a call.
///
/// Called on every call, from many threads at once: keep it quick, and
/// keep what you derive from the list (rings, weights) keyed by
/// `snapshot.version`. Return an index into `snapshot.instances` whose
/// `ctx.available` entry is true, or `None` if none fits (the call then fails
/// with [`Error::NoServers`](crate::Error::NoServers)); an index that is not
/// available is replaced by the next available one.
///
/// ```
/// use geerpc::xclient::{SelectContext, Selector, Snapshot};
///
/// /// Always the first available instance: a primary with standbys.
/// struct FirstAvailable;
///
/// impl Selector for FirstAvailable {
///     fn select(&self, _snapshot: &Snapshot, ctx: &SelectContext<'_>) -> Option<usize> {
///         ctx.next_available(0)
///     }
/// }
/// ```
pub trait Selector: Send + Sync {
    /// The index of the instance to call.
    fn select(&self, snapshot: &Snapshot, ctx: &SelectContext<'_>) -> Option<usize>;
}

/// The built-in selection policies; see [`SelectMode::selector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectMode {
    /// Uniformly at random ([`RandomSelector`]).
    Random,
    /// In turn ([`RoundRobinSelector`]).
    RoundRobin,
    /// In turn, in proportion to weights, interleaved
    /// ([`WeightedRoundRobinSelector`]).
    WeightedRoundRobin,
    /// By the call's key on a hash ring ([`ConsistentHashSelector`]).
    ConsistentHash,
    /// The less busy of two instances, random or the caller's home
    /// ([`P2cSelector`]).
    PowerOfTwoChoices,
}

impl SelectMode {
    /// A fresh selector for this mode.
    pub fn selector(self) -> Arc<dyn Selector> {
        match self {
            SelectMode::Random => Arc::new(RandomSelector),
            SelectMode::RoundRobin => Arc::new(RoundRobinSelector::default()),
            SelectMode::WeightedRoundRobin => Arc::new(WeightedRoundRobinSelector::default()),
            SelectMode::ConsistentHash => Arc::new(ConsistentHashSelector::default()),
            SelectMode::PowerOfTwoChoices => Arc::new(P2cSelector),
        }
    }
}

/// Any available instance, uniformly at random.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomSelector;

impl Selector for RandomSelector {
    fn select(&self, _: &Snapshot, ctx: &SelectContext<'_>) -> Option<usize> {
        let n = ctx.available_count();
        if n == 0 {
            return None;
        }
        ctx.nth_available(draw(n))
    }
}

/// Available instances in turn.
#[derive(Debug, Default)]
pub struct RoundRobinSelector {
    next: AtomicUsize,
}

impl Selector for RoundRobinSelector {
    fn select(&self, snapshot: &Snapshot, ctx: &SelectContext<'_>) -> Option<usize> {
        let n = snapshot.instances.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        ctx.next_available(start)
    }
}

/// Smooth weighted round-robin (as in nginx): over any run of calls each
/// instance gets its share of the weights, and a heavy instance's turns are
/// spread out rather than bunched (weights 5,1,1 give a a b a c a a, not
/// a a a a a b c). Weight 0 takes no calls unless every available instance
/// has weight 0.
#[derive(Debug, Default)]
pub struct WeightedRoundRobinSelector {
    /// The running "current weight" of each instance, for one list version.
    state: Mutex<(u64, Vec<i64>)>,
}

impl Selector for WeightedRoundRobinSelector {
    fn select(&self, snapshot: &Snapshot, ctx: &SelectContext<'_>) -> Option<usize> {
        let instances = &snapshot.instances;
        let all_zero = instances
            .iter()
            .zip(ctx.available)
            .all(|(i, a)| !*a || i.weight == 0);
        let weight = |i: usize| -> i64 {
            if all_zero {
                1
            } else {
                i64::from(instances[i].weight)
            }
        };
        let mut state = self.state.lock();
        if state.0 != snapshot.version || state.1.len() != instances.len() {
            *state = (snapshot.version, vec![0; instances.len()]);
        }
        let current = &mut state.1;
        let mut total = 0;
        let mut best: Option<usize> = None;
        for i in 0..instances.len() {
            if !ctx.available[i] || weight(i) == 0 {
                continue;
            }
            current[i] += weight(i);
            total += weight(i);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(b)
    }
}

/// Consistent hashing on the call's key: a ring with `replicas` virtual
/// nodes per instance (default 160), rebuilt only when the list version
/// changes. Adding one instance to n moves about 1/(n+1) of the keys; an
/// unavailable instance's keys go to the next instance on the ring while the
/// others keep theirs. Calls without a key go to a random instance.
///
/// The hash (FNV-1a, then a 64-bit mixer) is fixed, so every client process
/// maps a key to the same instance.
#[derive(Debug)]
pub struct ConsistentHashSelector {
    replicas: usize,
    ring: Mutex<Option<(u64, Arc<Ring>)>>,
}

#[derive(Debug)]
struct Ring {
    /// (point, instance index), sorted by point.
    points: Vec<(u64, usize)>,
    /// How many instances the ring was built for.
    instances: usize,
}

impl Default for ConsistentHashSelector {
    fn default() -> Self {
        ConsistentHashSelector::new(160)
    }
}

impl ConsistentHashSelector {
    /// A ring with `replicas` virtual nodes per instance (at least 1).
    pub fn new(replicas: usize) -> ConsistentHashSelector {
        ConsistentHashSelector {
            replicas: replicas.max(1),
            ring: Mutex::new(None),
        }
    }

    fn ring(&self, snapshot: &Snapshot) -> Arc<Ring> {
        let mut cached = self.ring.lock();
        if let Some((v, ring)) = &*cached {
            // The length check too: a discovery that breaks the version
            // contract, or a selector shared by two clients, must not index
            // out of bounds.
            if *v == snapshot.version && ring.instances == snapshot.instances.len() {
                return ring.clone();
            }
        }
        let mut points = Vec::with_capacity(snapshot.instances.len() * self.replicas);
        for (i, inst) in snapshot.instances.iter().enumerate() {
            for r in 0..self.replicas {
                points.push((hash_key(format!("{}#{r}", inst.addr).as_bytes()), i));
            }
        }
        points.sort_unstable();
        let ring = Arc::new(Ring {
            points,
            instances: snapshot.instances.len(),
        });
        *cached = Some((snapshot.version, ring.clone()));
        ring
    }
}

impl Selector for ConsistentHashSelector {
    fn select(&self, snapshot: &Snapshot, ctx: &SelectContext<'_>) -> Option<usize> {
        let Some(key) = ctx.key else {
            return RandomSelector.select(snapshot, ctx);
        };
        let ring = self.ring(snapshot);
        if ring.points.is_empty() {
            return None;
        }
        let h = hash_key(key);
        let start = ring.points.partition_point(|(p, _)| *p < h);
        let n = ring.points.len();
        (0..n)
            .map(|k| ring.points[(start + k) % n].1)
            .find(|&i| ctx.available.get(i).copied().unwrap_or(false))
    }
}

/// The stable 64-bit hash of a key used by [`ConsistentHashSelector`]
/// (`geerpc::xclient::hash_key`): FNV-1a, then a 64-bit mixer. Fixed
/// across versions and processes, so that a key maps to the same instance
/// in every client.
pub fn hash_key(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV alone clusters similar keys ("a#1", "a#2"): finish with a mixer.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Power of two choices: two distinct random available instances, and the
/// one with fewer calls in flight from this client. A slow instance piles
/// up calls in flight and so is picked less, without any latency tracking.
///
/// When the calling thread has a [`home`](SelectContext::home) with calls
/// in flight, the two are the home and one random other, and the home is
/// kept unless the other has fewer than three quarters of its calls in
/// flight. Under load this keeps most blocking callers on the connection
/// that just woke them, so that their requests share writes, while an
/// instance that slows down still sheds callers once its calls pile up
/// (the home may carry up to a third more calls than the other). A home
/// with nothing in flight has no batch to join: a lone caller's calls are
/// spread as without one.
///
/// In an [`XClient`](crate::XClient), an instance that just refused a
/// call as over a limit (`resource_exhausted`), is going away or is
/// evicted is not [`available`](SelectContext::available) while another
/// instance is: p2c sees it as worse than any of those, however few calls
/// it has in flight (a refusing instance answers fast, so its count alone
/// would draw calls to it).
#[derive(Debug, Default, Clone, Copy)]
pub struct P2cSelector;

impl Selector for P2cSelector {
    fn select(&self, _: &Snapshot, ctx: &SelectContext<'_>) -> Option<usize> {
        let n = ctx.available_count();
        match n {
            0 => None,
            1 => ctx.nth_available(0),
            _ => {
                let home = ctx
                    .home
                    .filter(|&h| ctx.available.get(h) == Some(&true) && ctx.inflight[h] > 0);
                // The home's rank among the available, or a random first pick.
                let a = match home {
                    Some(h) => ctx.available[..h].iter().filter(|a| **a).count(),
                    None => draw(n),
                };
                let mut b = draw(n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (ctx.nth_available(a)?, ctx.nth_available(b)?);
                let (ia, ib) = (ctx.inflight[a], ctx.inflight[b]);
                let take_b = match home {
                    Some(_) => 4 * ib < 3 * ia,
                    None => ib < ia,
                };
                Some(if take_b { b } else { a })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::xclient::discovery::Instance;

    fn snap(version: u64, instances: Vec<Instance>) -> Snapshot {
        Snapshot {
            version,
            instances: instances.into(),
        }
    }

    fn pick(s: &dyn Selector, snapshot: &Snapshot, key: Option<&[u8]>) -> usize {
        let n = snapshot.instances.len();
        let ctx = SelectContext {
            service_method: "A.B",
            key,
            inflight: &vec![0; n],
            available: &vec![true; n],
            home: None,
        };
        s.select(snapshot, &ctx).unwrap()
    }

    #[test]
    fn smooth_weighted_interleaves() {
        let s = snap(
            1,
            vec![
                Instance::new("a").with_weight(5),
                Instance::new("b"),
                Instance::new("c"),
            ],
        );
        let sel = WeightedRoundRobinSelector::default();
        let order: Vec<usize> = (0..7).map(|_| pick(&sel, &s, None)).collect();
        assert_eq!(order, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn ring_skips_unavailable_and_keeps_others() {
        let s = snap(1, (0..5).map(|i| Instance::new(format!("i{i}"))).collect());
        let sel = ConsistentHashSelector::default();
        let mut avail = vec![true; 5];
        avail[2] = false;
        let infl = vec![0; 5];
        for k in 0..200u32 {
            let key = k.to_be_bytes();
            let before = pick(&sel, &s, Some(&key));
            let ctx = SelectContext {
                service_method: "A.B",
                key: Some(&key),
                inflight: &infl,
                available: &avail,
                home: None,
            };
            let after = sel.select(&s, &ctx).unwrap();
            assert_ne!(after, 2);
            if before != 2 {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn p2c_prefers_less_busy() {
        let s = snap(1, vec![Instance::new("a"), Instance::new("b")]);
        let ctx = SelectContext {
            service_method: "A.B",
            key: None,
            inflight: &[5, 0],
            available: &[true, true],
            home: None,
        };
        for _ in 0..20 {
            assert_eq!(P2cSelector.select(&s, &ctx), Some(1));
        }
    }

    #[test]
    fn p2c_keeps_the_home_until_another_is_clearly_less_busy() {
        let s = snap(
            1,
            vec![Instance::new("a"), Instance::new("b"), Instance::new("c")],
        );
        let pick = |inflight: &[usize], available: &[bool], home: Option<usize>| {
            let ctx = SelectContext {
                service_method: "A.B",
                key: None,
                inflight,
                available,
                home,
            };
            P2cSelector.select(&s, &ctx).unwrap()
        };
        let all = [true, true, true];
        for _ in 0..50 {
            // Within a quarter: the home stays, even against an idler one.
            assert_eq!(pick(&[8, 7, 6], &all, Some(0)), 0);
            assert_eq!(pick(&[1, 1, 1], &all, Some(2)), 2);
            // Under three quarters of the home's load: the other is taken.
            assert_ne!(pick(&[4, 8, 2], &all, Some(1)), 1);
            // A home that may not be picked is no home: plain p2c.
            let only_ac = [true, false, true];
            assert_eq!(pick(&[4, 0, 5], &only_ac, Some(1)), 0);
            // The home found among the available past an unavailable one.
            assert_eq!(pick(&[0, 8, 7], &[false, true, true], Some(2)), 2);
        }
        // A home with nothing in flight is no home: plain p2c spreads.
        let mut idle = HashMap::new();
        for _ in 0..300 {
            *idle.entry(pick(&[0, 0, 0], &all, Some(0))).or_insert(0) += 1;
        }
        assert!(idle.len() == 3 && idle[&0] < 200, "{idle:?}");
        // The home is compared with each other instance in turn.
        let mut others = HashMap::new();
        for _ in 0..300 {
            *others.entry(pick(&[9, 0, 0], &all, Some(0))).or_insert(0) += 1;
        }
        assert_eq!(others.get(&0), None, "{others:?}");
        assert!(others[&1] > 100 && others[&2] > 100, "{others:?}");
    }
}
