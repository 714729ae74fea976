//! Tooling: the one clock every loadgen thread stamps with (µs since the Unix epoch, read
//! from a monotonic source so latencies never jump with the wall clock) and CPU-time reads.

use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_us: u64,
    start: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            base_us: edgefilter_sensor::unix_micros(SystemTime::now()),
            start: Instant::now(),
        }
    }

    /// Now, in µs since the Unix epoch.
    #[inline]
    pub fn now_us(&self) -> u64 {
        self.base_us + self.start.elapsed().as_micros() as u64
    }

    /// How long until `us` (zero if it has passed).
    #[inline]
    pub fn until(&self, us: u64) -> Duration {
        Duration::from_micros(us.saturating_sub(self.now_us()))
    }
}

/// CPU time (user + system) of the whole process.
pub fn process_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time (user + system) of the calling thread.
pub fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes into the struct we pass, which is plain data.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut ru) != 0 {
            return Duration::ZERO;
        }
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_near_wall_time() {
        let c = Clock::start();
        let a = c.now_us();
        let wall = edgefilter_sensor::unix_micros(SystemTime::now());
        assert!(a.abs_diff(wall) < 1_000_000);
        assert!(c.now_us() >= a);
        assert_eq!(c.until(a), Duration::ZERO);
        assert!(c.until(a + 10_000_000) > Duration::from_secs(9));
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let before = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - before < Duration::from_millis(5) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(process_cpu() >= thread_cpu());
        assert!(x > 0);
    }
}
