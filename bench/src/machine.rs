//! What machine and which versions a result came from, and one process's resource use from /proc.

use crate::result::{BrokerUsage, Machine, Versions};

pub fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown")
        .to_string();
    let mem_bytes = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    Machine {
        hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        cpu_model,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        mem_bytes,
    }
}

/// Versions of what ran. The git revision is baked in at build time by build.rs when available.
pub fn versions(kafka: Option<String>) -> Versions {
    Versions {
        spool_git: option_env!("SPOOL_GIT_REVISION")
            .unwrap_or("unknown")
            .to_string(),
        bench: env!("CARGO_PKG_VERSION").to_string(),
        kafka,
    }
}

/// Cumulative counters of one process, read from /proc/PID/{stat,status,io}.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSnapshot {
    pub cpu_s: f64,
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
    pub write_bytes: u64,
}

/// Reads /proc for `pid`, its threads included. `None` once the process is gone.
pub fn snapshot(pid: u32) -> Option<ProcSnapshot> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may itself contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let write_bytes = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    Some(ProcSnapshot {
        cpu_s: ticks as f64 / clock_ticks_per_s(),
        rss_bytes: kb("VmRSS:"),
        hwm_bytes: kb("VmHWM:"),
        write_bytes,
    })
}

fn clock_ticks_per_s() -> f64 {
    // USER_HZ, the unit of /proc's tick counts, is part of Linux's ABI: 100 on every
    // architecture Spool runs on (asking sysconf would need `unsafe`, which the workspace denies).
    100.0
}

/// Resets the process's peak RSS (VmHWM) to its current RSS, so a peak measured afterwards
/// belongs to the workload, not to start-up (Linux: `echo 5 > /proc/PID/clear_refs`).
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").is_ok()
}

/// Reads /proc for every process of `pids` and sums their counters (a cluster's brokers):
/// `hwm_bytes` becomes the sum of each process's own peak. `None` when `pids` is empty or any
/// of them is gone.
pub fn snapshot_sum(pids: &[u32]) -> Option<ProcSnapshot> {
    if pids.is_empty() {
        return None;
    }
    let mut sum = ProcSnapshot::default();
    for &pid in pids {
        let s = snapshot(pid)?;
        sum.cpu_s += s.cpu_s;
        sum.rss_bytes += s.rss_bytes;
        sum.hwm_bytes += s.hwm_bytes.max(s.rss_bytes);
        sum.write_bytes += s.write_bytes;
    }
    Some(sum)
}

/// `reset_peak_rss` for every process (each is tried); whether all succeeded.
pub fn reset_peak_rss_all(pids: &[u32]) -> bool {
    let failed = pids.iter().filter(|&&pid| !reset_peak_rss(pid)).count();
    failed == 0
}

/// Usage between two snapshots (`snapshot_sum`) of the same processes.
pub fn usage(pids: &[u32], start: &ProcSnapshot, end: &ProcSnapshot) -> BrokerUsage {
    BrokerUsage {
        pid: pids.first().copied().unwrap_or(0),
        pids: pids.to_vec(),
        cpu_s: (end.cpu_s - start.cpu_s).max(0.0),
        peak_rss_bytes: end.hwm_bytes.max(end.rss_bytes),
        disk_write_bytes: end.write_bytes.saturating_sub(start.write_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_from_proc() {
        let s = snapshot(std::process::id()).expect("own /proc entry");
        assert!(s.rss_bytes > 0);
        assert!(s.hwm_bytes >= s.rss_bytes);
        let me = std::process::id();
        let two = snapshot_sum(&[me, me]).expect("own /proc entry twice");
        assert!(two.rss_bytes > s.rss_bytes / 2 && two.hwm_bytes >= two.rss_bytes);
        assert!(snapshot_sum(&[]).is_none());
        let m = machine();
        assert!(m.cores >= 1 && m.mem_bytes > 0 && !m.kernel.is_empty());
    }
}
