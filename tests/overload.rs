//! Overload protection: past `max_concurrency` (or a method's
//! `method_concurrency`) a call waits at most `max_queue_wait`, never past
//! its deadline, then is refused `resource_exhausted` without running; an
//! XClient sends it to another instance; the adaptive limit keeps the
//! latency of a CPU-bound spike bounded. (The adaptive algorithm itself is
//! unit-tested with a synthetic clock in src/server/limits/adaptive.rs.)

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Args;
use crossbeam_channel::{Receiver, Sender};
use geerpc::server::ServerHandle;
use geerpc::xclient::Instance;
use geerpc::{Client, Code, FailMode, MultiServerDiscovery, SelectMode, Server, Service, XClient};

/// Slack for a loaded 2-core machine shared with compilers: "at once" is
/// held to this (the refusal itself takes microseconds).
const AT_ONCE: Duration = Duration::from_millis(800);

/// `Hold.Wait` tells `started` it began, then waits for a message on
/// `release` (at most 30 s); `Hold.Quick` answers at once. `ran` counts
/// the handlers that ran, both methods.
struct Hold {
    started: Receiver<()>,
    release: Sender<()>,
    ran: Arc<AtomicU64>,
}

fn hold_service() -> (Service, Hold) {
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded::<()>();
    let ran = Arc::new(AtomicU64::new(0));
    let (r1, r2) = (ran.clone(), ran.clone());
    let svc = Service::new("Hold")
        .method("Wait", move |a: Args| {
            r1.fetch_add(1, Ordering::SeqCst);
            let _ = started_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
            Ok::<_, String>(a.num1)
        })
        .method("Quick", move |a: Args| {
            r2.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(a.num1)
        });
    (
        svc,
        Hold {
            started,
            release,
            ran,
        },
    )
}

fn start(builder: geerpc::server::ServerBuilder) -> (ServerHandle, Hold) {
    let server = builder.build();
    let (svc, hold) = hold_service();
    server.register(svc).unwrap();
    (server.listen("tcp@127.0.0.1:0").unwrap(), hold)
}

/// Starts `n` `Hold.Wait` calls, each on its own client (so each has its
/// own connection thread), and waits until all `n` handlers run.
fn occupy(
    addr: &geerpc::Address,
    hold: &Hold,
    n: usize,
) -> Vec<std::thread::JoinHandle<geerpc::Result<i64>>> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let c = Client::dial(addr).unwrap();
            std::thread::spawn(move || {
                c.call::<_, i64>(
                    "Hold.Wait",
                    &Args {
                        num1: i as i64,
                        num2: 0,
                    },
                )
            })
        })
        .collect();
    for _ in 0..n {
        hold.started
            .recv_timeout(Duration::from_secs(20))
            .expect("a Hold.Wait handler did not start");
    }
    calls
}

fn release(hold: &Hold, calls: Vec<std::thread::JoinHandle<geerpc::Result<i64>>>) {
    for _ in 0..calls.len() {
        hold.release.send(()).unwrap();
    }
    for c in calls {
        c.join().unwrap().expect("a held call failed");
    }
}

fn quick(c: &Client, method: &str) -> geerpc::Result<i64> {
    c.call::<_, i64>(method, &Args { num1: 7, num2: 0 })
}

#[test]
fn past_the_limit_a_call_is_refused_at_once_without_running() {
    common::init_log();
    let n = 4;
    let (h, hold) = start(Server::builder().max_concurrency(n));
    let calls = occupy(h.addr(), &hold, n);
    assert_eq!(hold.ran.load(Ordering::SeqCst), n as u64);
    let c = Client::dial(h.addr()).unwrap();
    let t0 = Instant::now();
    let err = quick(&c, "Hold.Quick").unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err.remote_code(), Some(&Code::ResourceExhausted), "{err:?}");
    assert!(err.is_retryable(), "a refused call is retryable: {err:?}");
    assert_eq!(
        err.to_string(),
        "rpc server: Hold.Quick refused: 4 calls running, the limit (max_concurrency)"
    );
    assert!(took < AT_ONCE, "refused after {took:?}, not at once");
    assert_eq!(
        hold.ran.load(Ordering::SeqCst),
        n as u64,
        "the refused call ran"
    );
    // Once the held calls finish, calls are admitted again.
    release(&hold, calls);
    assert_eq!(quick(&c, "Hold.Quick").unwrap(), 7);
    assert_eq!(hold.ran.load(Ordering::SeqCst), n as u64 + 1);
}

#[test]
fn a_call_waits_for_a_place_up_to_max_queue_wait() {
    common::init_log();
    let wait = Duration::from_secs(20);
    let (h, hold) = start(Server::builder().max_concurrency(1).max_queue_wait(wait));
    let calls = occupy(h.addr(), &hold, 1);
    // A call at the limit waits; it runs as soon as the place frees.
    let c = Client::dial(h.addr()).unwrap();
    let waiting = std::thread::spawn(move || quick(&c, "Hold.Quick"));
    // Not admitted while the place is taken (it would have run by now:
    // the whole call takes microseconds).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        hold.ran.load(Ordering::SeqCst),
        1,
        "admitted past the limit"
    );
    let freed = Instant::now();
    release(&hold, calls);
    assert_eq!(waiting.join().unwrap().unwrap(), 7);
    assert!(
        freed.elapsed() < wait / 2,
        "not admitted when the place freed"
    );
    assert_eq!(hold.ran.load(Ordering::SeqCst), 2);
}

#[test]
fn a_call_refused_after_max_queue_wait_when_no_place_frees() {
    common::init_log();
    let wait = Duration::from_millis(300);
    let (h, hold) = start(Server::builder().max_concurrency(1).max_queue_wait(wait));
    let calls = occupy(h.addr(), &hold, 1);
    let c = Client::dial(h.addr()).unwrap();
    let t0 = Instant::now();
    let err = quick(&c, "Hold.Quick").unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err.remote_code(), Some(&Code::ResourceExhausted), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("no place within 300ms (max_queue_wait)"),
        "{err}"
    );
    // Near the wait: not before it, and not long after (loaded machine).
    assert!(took >= wait, "refused after {took:?}, before the wait");
    assert!(
        took < wait + Duration::from_secs(3),
        "refused after {took:?}"
    );
    assert_eq!(hold.ran.load(Ordering::SeqCst), 1);
    release(&hold, calls);
}

#[test]
fn the_wait_never_passes_the_calls_deadline() {
    common::init_log();
    // The server's deadline for the call (here from the client's handle
    // timeout) comes long before max_queue_wait.
    let wait = Duration::from_secs(20);
    let (h, hold) = start(Server::builder().max_concurrency(1).max_queue_wait(wait));
    let calls = occupy(h.addr(), &hold, 1);
    let c = Client::builder()
        .handle_timeout(Some(Duration::from_millis(200)))
        .dial(h.addr())
        .unwrap();
    let t0 = Instant::now();
    let err = quick(&c, "Hold.Quick").unwrap_err();
    let took = t0.elapsed();
    // Expired while it waited for a place: deadline_exceeded, with the
    // text a Go client's handle timeout gets.
    assert_eq!(err.remote_code(), Some(&Code::DeadlineExceeded), "{err:?}");
    assert!(err.to_string().contains("request handle timeout"), "{err}");
    assert!(
        took < Duration::from_secs(5),
        "waited {took:?}, past its deadline"
    );
    assert_eq!(hold.ran.load(Ordering::SeqCst), 1);
    release(&hold, calls);
}

#[test]
fn a_method_limit_leaves_other_methods_alone() {
    common::init_log();
    let (h, hold) = start(Server::builder().method_concurrency("Hold.Wait", 2));
    let calls = occupy(h.addr(), &hold, 2);
    let c = Client::dial(h.addr()).unwrap();
    let err = c
        .call::<_, i64>("Hold.Wait", &Args { num1: 1, num2: 0 })
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(&Code::ResourceExhausted), "{err:?}");
    assert_eq!(
        err.to_string(),
        "rpc server: Hold.Wait refused: 2 calls of it running, \
         its method's limit (method_concurrency)"
    );
    assert_eq!(hold.ran.load(Ordering::SeqCst), 2);
    for _ in 0..20 {
        assert_eq!(quick(&c, "Hold.Quick").unwrap(), 7);
    }
    release(&hold, calls);
}

#[test]
fn an_xclient_sends_a_refused_call_to_another_instance() {
    common::init_log();
    let (full, full_hold) = start(Server::builder().max_concurrency(1));
    let (free, free_hold) = start(Server::builder().max_concurrency(1));
    let calls = occupy(full.addr(), &full_hold, 1);
    // A plain client of the saturated instance is refused, retryably.
    let plain = Client::dial(full.addr()).unwrap();
    let err = quick(&plain, "Hold.Quick").unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let xc = XClient::builder(MultiServerDiscovery::new(vec![
        Instance::new(full.addr().to_string()),
        Instance::new(free.addr().to_string()),
    ]))
    .select_mode(SelectMode::RoundRobin)
    .fail_mode(FailMode::FailFast)
    .timeout(Some(Duration::from_secs(10)))
    .build();
    // Round robin sends about half of these to the saturated instance
    // first; every one must succeed, run by the other instance.
    for i in 0..10 {
        let got = xc
            .call::<_, i64>("Hold.Quick", &Args { num1: i, num2: 0 })
            .unwrap_or_else(|e| panic!("call {i}: {e:?}"));
        assert_eq!(got, i);
    }
    assert_eq!(
        full_hold.ran.load(Ordering::SeqCst),
        1,
        "ran on the saturated instance"
    );
    assert_eq!(free_hold.ran.load(Ordering::SeqCst), 10);
    release(&full_hold, calls);
}

/// This thread's CPU time: a handler that burns a fixed amount of it costs
/// the same whatever the contention, unlike one that spins until a
/// wall-clock instant (which, preempted, just ends later at no more cost).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `Burn.Ms`: burns Num1 milliseconds of CPU time; `peak` keeps the most
/// handlers seen running at once.
fn burn(peak: Arc<AtomicUsize>) -> Service {
    let running = Arc::new(AtomicUsize::new(0));
    Service::new("Burn").method("Ms", move |a: Args| {
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        let until = thread_cpu() + Duration::from_millis(a.num1 as u64);
        let mut x = 0u64;
        while thread_cpu() < until {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
            }
        }
        running.fetch_sub(1, Ordering::SeqCst);
        Ok::<_, String>(x as i64 & 1)
    })
}

/// What a spike showed: the successful calls' p99 and count, the
/// refusals, and the most handlers running at once.
struct Spike {
    p99: Duration,
    ok: usize,
    shed: u64,
    peak: usize,
}

/// A spike of `callers` closed-loop callers (each on its own connection)
/// of a 5 ms CPU-bound handler for `length`; refused callers back off
/// 5 ms (so that refusals do not become a busy loop).
fn spike(server: Server, callers: usize, length: Duration) -> Spike {
    let peak = Arc::new(AtomicUsize::new(0));
    server.register(burn(peak.clone())).unwrap();
    let h = server.listen("tcp@127.0.0.1:0").unwrap();
    let shed = AtomicU64::new(0);
    let end = Instant::now() + length;
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..callers)
            .map(|_| {
                let (addr, shed) = (h.addr(), &shed);
                s.spawn(move || {
                    let c = Client::dial(addr).unwrap();
                    let mut lat = Vec::new();
                    // Bounded in time and count.
                    for _ in 0..100_000 {
                        if Instant::now() >= end {
                            break;
                        }
                        let t0 = Instant::now();
                        match c.call::<_, i64>("Burn.Ms", &Args { num1: 5, num2: 0 }) {
                            Ok(_) => lat.push(t0.elapsed()),
                            Err(e) if e.remote_code() == Some(&Code::ResourceExhausted) => {
                                shed.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    lat
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    h.shutdown();
    lat.sort();
    Spike {
        p99: lat[lat.len() * 99 / 100],
        ok: lat.len(),
        shed: shed.load(Ordering::Relaxed),
        peak: peak.load(Ordering::SeqCst),
    }
}

#[test]
fn the_adaptive_limit_bounds_the_handlers_sharing_the_cores_under_a_spike() {
    common::init_log();
    // 4 x 40 callers of a handler that needs 5 ms of CPU: without a limit
    // nearly all of them run at once, sharing the cores, so each call
    // takes ~160 x 5 / cores ms; the adaptive limit holds the running
    // handlers at most at its limit (it starts at max(40, 2 x cores) and
    // comes down towards the core count as the latency rises), the rest
    // refused at once. What is asserted is the
    // number sharing the cores, which is what bounds the queueing: the
    // p99 comparison it implies is too noisy on a loaded 2-core machine
    // to assert (it is printed; the benchmark measures it), and the
    // limit's movement is unit-tested with a synthetic clock
    // (src/server/limits/adaptive.rs).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = 40.max(2 * cores);
    let callers = 4 * start;
    let length = Duration::from_millis(2000);
    // The limit starts at `start` and, the latency rising, goes down: it
    // probes up by at most (1 + ALPHA)x a window (a window's no-load
    // concurrency, min latency x peak rate, is at most the concurrency it
    // admitted), and comes back down when the latency rises with it. A
    // spike slowed by a loaded machine can see a window whose latency
    // dips (the machine's other load easing) and then another: two probes
    // before the rising latency pulls the limit down, so the bound allows
    // two windows' growth (seen: 60 at once against one window's 57).
    // ALPHA and the window sizes are src/server/limits/adaptive.rs's
    // (brpc's): a window closes at 500 samples, or at 1 s with 100, so a
    // 2 s spike of 5 ms CPU calls on 2 cores (at most ~800 calls) closes
    // about two.
    const ALPHA: f64 = 0.4;
    const PROBE_WINDOWS: i32 = 2;
    let probe = (start as f64 * (1.0 + ALPHA).powi(PROBE_WINDOWS)).ceil() as usize + 1;
    let off = spike(Server::new(), callers, length);
    let on = spike(
        Server::builder().adaptive_concurrency(true).build(),
        callers,
        length,
    );
    eprintln!(
        "without a limit: p99 {:?}, {} calls, {} refused, {} at once; \
         adaptive: p99 {:?}, {} calls, {} refused, {} at once",
        off.p99, off.ok, off.shed, off.peak, on.p99, on.ok, on.shed, on.peak
    );
    assert_eq!(off.shed, 0);
    // (Without the limit, typically 60 to 160 ran at once here; not
    // asserted, as that depends on how much CPU the machine leaves us.)
    assert!(on.shed > 0, "the adaptive limit refused nothing");
    assert!(
        on.ok > 20,
        "the adaptive limit admitted too little: {}",
        on.ok
    );
    assert!(
        on.peak <= probe,
        "{} handlers ran at once past the adaptive limit {start} (probing to {probe})",
        on.peak
    );
}
