//! The rules' per-device state is bounded: 100,000 devices with every stateful rule on (edge
//! mode disarmed, rate limit, an open summary window each) must fit in 32 MB. Measured, not
//! estimated: this test binary's global allocator counts every live heap byte as malloc
//! really reserves it (`malloc_usable_size`, so allocator rounding counts too), and the
//! state is what the stage holds after the batches that created it are gone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgefilter::pipeline::rules::{AlertMode, Anchor, RuleSettings, Rules};
use edgefilter::pipeline::stage::{Batch, Job, Stage, Work};
use edgefilter::pipeline::verdict::FieldPath;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

fn usable(ptr: *mut u8) -> isize {
    // SAFETY: `ptr` was returned by the system allocator (malloc) and is not yet freed.
    unsafe { libc::malloc_usable_size(ptr.cast()) as isize }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counts are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(usable(p), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(usable(ptr), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = usable(ptr);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(usable(p) - before, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const DEVICES: usize = 100_000;
const LIMIT: isize = 32 << 20;

#[test]
fn the_state_of_100k_devices_fits_in_32_mb() {
    let anchor = Anchor::now();
    let rules = Rules::with(
        25.0,
        RuleSettings {
            mode: AlertMode::Edge,
            hysteresis: 1.0,
            clear: true,
            min_interval: Duration::from_secs(60),
            window: Duration::from_secs(600),
            idle: Duration::from_secs(600),
            ..Default::default()
        },
        None,
        anchor,
    );
    let mut stage = Stage::new(FieldPath::parse("machine.temperature").unwrap(), 1 << 16);
    // Warm the stage's own buffers (evaluator) before the baseline.
    let mut warm: Batch<()> = Batch::new(0, rules.clone(), Vec::new());
    stage.run(&mut warm);
    drop(warm);
    let base = LIVE.load(Ordering::Relaxed);
    let body = Bytes::from_static(
        br#"{"machine":{"temperature":30.5},"timeCreated":"2026-11-26T07:00:00Z"}"#,
    );
    let now = Instant::now();
    for chunk in 0..DEVICES / 1000 {
        let jobs = (0..1000)
            .map(|i| {
                // Realistic keys: the input topic of each device.
                let device = Bytes::from(format!(
                    "telemetry/plant-7/line-3/dev-{:06}",
                    chunk * 1000 + i
                ));
                Job::new(body.clone(), device, now, ())
            })
            .collect();
        let mut batch = Batch::new(0, rules.clone(), jobs);
        stage.run(&mut batch);
        assert_eq!(batch.outs.len(), 1000, "each device's first reading alerts");
    }
    assert_eq!(stage.devices(), DEVICES);
    let used = LIVE.load(Ordering::Relaxed) - base;
    let per_device = used as f64 / DEVICES as f64;
    println!(
        "rule state of {DEVICES} devices: {:.1} MB live heap ({per_device:.0} bytes per device)",
        used as f64 / (1 << 20) as f64
    );
    assert!(
        used <= LIMIT,
        "{used} bytes for {DEVICES} devices (limit {LIMIT})"
    );
    // Idle devices are evicted and give their memory back.
    let later = now + Duration::from_secs(601);
    let mut tick: Batch<()> = Batch::control(0, rules.clone(), Work::Tick(later));
    stage.run(&mut tick);
    assert_eq!(stage.devices(), 0);
    assert_eq!(tick.outs.len(), DEVICES, "the open windows' summaries");
    drop(tick);
    let left = LIVE.load(Ordering::Relaxed) - base;
    println!("after eviction: {left} bytes");
    assert!(
        left < 1 << 20,
        "{left} bytes left after evicting the devices"
    );
}

#[test]
fn turning_the_rules_off_forgets_the_devices_and_their_memory() {
    let anchor = Anchor::now();
    let on = Rules::with(
        25.0,
        RuleSettings {
            mode: AlertMode::Edge,
            ..Default::default()
        },
        None,
        anchor,
    );
    let mut stage = Stage::new(FieldPath::parse("machine.temperature").unwrap(), 1 << 16);
    let mut warm: Batch<()> = Batch::new(0, on.clone(), Vec::new());
    stage.run(&mut warm);
    drop(warm);
    let base = LIVE.load(Ordering::Relaxed);
    let body = Bytes::from_static(br#"{"machine":{"temperature":30.5}}"#);
    let jobs = (0..20_000)
        .map(|i| {
            Job::new(
                body.clone(),
                Bytes::from(format!("t/{i}")),
                Instant::now(),
                (),
            )
        })
        .collect();
    let mut batch = Batch::new(0, on, jobs);
    stage.run(&mut batch);
    drop(batch);
    assert!(LIVE.load(Ordering::Relaxed) - base > 1 << 20);
    let off = Rules::with(25.0, RuleSettings::default(), None, anchor);
    let mut batch: Batch<()> = Batch::new(0, off, Vec::new());
    stage.run(&mut batch);
    drop(batch);
    assert_eq!(stage.devices(), 0);
    let left = LIVE.load(Ordering::Relaxed) - base;
    assert!(
        left < 64 << 10,
        "{left} bytes left after the rules went off"
    );
}
