//! What `/proc` tells about a function's process: its CPU time and its peak resident memory.

use std::time::Duration;

/// CPU time a process has used so far, its exited threads included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTime {
    /// In user mode.
    pub user: Duration,
    /// In the kernel, on the process's behalf.
    pub system: Duration,
}

impl CpuTime {
    /// Both together.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The time used between `earlier` and this reading.
    pub fn since(&self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// The kernel's clock ticks per second, in which `/proc/<pid>/stat` counts CPU time.
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// `utime` and `stime` of `/proc/<pid>/stat` (fields 14 and 15).
pub fn cpu_time(pid: u32) -> CpuTime {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> u64 { fields[index].parse().expect("a tick count") };
    let per_second = ticks_per_second();
    let duration = |t: u64| Duration::from_micros(t * 1_000_000 / per_second);
    // Field 3 (state) is at index 0 here: utime (14) is at 11, stime (15) at 12.
    CpuTime {
        user: duration(ticks(11)),
        system: duration(ticks(12)),
    }
}

/// A `kB` line of `/proc/<pid>/status`, such as `VmHWM` (peak resident set) or `VmRSS`.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

/// The peak resident set size (`VmHWM`) in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM") as f64 / 1024.0
}
