//! Observability beside the data flow: the standard `process_*` metrics (CPU seconds, resident
//! and virtual memory, threads, file descriptors, start time) that Prometheus' own client
//! libraries export, read from `/proc/self` at each scrape of `/metrics` (registered as a
//! collector in [`crate::metrics::Metrics`]). Nothing here runs on the hot path. Off Linux
//! the collector exports nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What one scrape reads about this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// The fields of `/proc/<pid>/stat` after the command name: state is index 0, so field N of
/// proc(5) (1-based, counting pid and comm) is index N - 3.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    Some(after_comm.split_whitespace().collect())
}

/// Parses `/proc/self/stat` (and the boot time from `/proc/stat`) with the clock tick and
/// page size given. Pure, for tests.
pub fn parse_stat(stat: &str, proc_stat: &str, ticks: f64, page: u64) -> Option<ProcessStats> {
    let f = stat_fields(stat)?;
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    let utime = field(14)?;
    let stime = field(15)?;
    let threads = field(20)?;
    let starttime = field(22)?;
    let vsize = field(23)?;
    let rss_pages = field(24)?;
    let btime: u64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks,
        resident_bytes: rss_pages * page,
        virtual_bytes: vsize,
        threads,
        start_time_seconds: btime as f64 + starttime as f64 / ticks,
        open_fds: 0,
        max_fds: 0,
    })
}

/// Reads this process's figures; `None` where `/proc` is not available.
pub fn read_self() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let proc_stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    let page = rustix::param::page_size();
    if ticks == 0 || page == 0 {
        return None;
    }
    let mut s = parse_stat(&stat, &proc_stat, ticks as f64, page as u64)?;
    s.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    s.max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    Some(s)
}

/// The `process_*` metrics, read at each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = read_self() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                s.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                s.max_fds as f64,
            ),
            ("process_threads", "Number of OS threads", s.threads as f64),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_is_read_by_field_number() {
        // proc(5) fields: utime 14, stime 15, num_threads 20, starttime 22, vsize 23, rss 24.
        // The command name contains spaces and a parenthesis.
        let stat = "4242 (edge (filter) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    150 50 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let s = parse_stat(stat, proc_stat, 100.0, 4096).unwrap();
        assert_eq!(s.cpu_seconds, 2.0);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_time_seconds, 1_700_000_123.45);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.resident_bytes, 2560 * 4096);
        assert!(parse_stat("garbage", proc_stat, 100.0, 4096).is_none());
        assert!(parse_stat(stat, "cpu 1\n", 100.0, 4096).is_none());
    }

    #[test]
    fn this_process_is_read() {
        let s = read_self().expect("/proc is mounted on Linux");
        assert!(s.resident_bytes > 0 && s.threads >= 1 && s.open_fds >= 3 && s.max_fds > 0);
        assert!(s.start_time_seconds > 1e9);
    }
}
