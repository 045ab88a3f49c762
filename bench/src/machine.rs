//! What a run was measured on: CPU model, logical CPUs, kernel, clock source.

use std::fmt;

/// Description of the machine, read from /proc and /sys (fields are "unknown" where
/// they cannot be read).
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` of the first CPU in /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs this process may run on.
    pub cpu_count: usize,
    /// Kernel release.
    pub kernel: String,
    /// Current clock source (`tsc` keeps `Instant::now` in the vDSO, off the kernel).
    pub clocksource: String,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

impl Machine {
    /// Look at this machine.
    pub fn detect() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cpu_count = std::thread::available_parallelism().map_or(0, |n| n.get());
        Machine {
            cpu_model,
            cpu_count,
            kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
            clocksource: read_trimmed(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .unwrap_or_else(|| "unknown".into()),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} logical CPUs), Linux {}, clocksource {}",
            self.cpu_model, self.cpu_count, self.kernel, self.clocksource
        )
    }
}
