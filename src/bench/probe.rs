//! What the benchmark reads off the running system: a process's CPU time
//! and peak RSS (Linux /proc) and Redis INFO counters; the consumer group's
//! committed offsets come from [`crate::kafka::GroupProgress`].

/// CPU seconds (user + system) and peak resident memory of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub cpu_secs: f64,
    pub peak_rss_bytes: u64,
}

impl ProcStats {
    /// Reads /proc/PID; zeros where it cannot (not Linux, process gone).
    pub fn read(pid: u32) -> ProcStats {
        let mut s = ProcStats::default();
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            s.cpu_secs = parse_cpu(&stat, clock_ticks()).unwrap_or(0.0);
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            s.peak_rss_bytes = parse_kb(&status, "VmHWM:").unwrap_or(0) * 1024;
        }
        s
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime from /proc/PID/stat (fields 14 and 15, after the
/// parenthesised command name, which may hold spaces).
fn parse_cpu(stat: &str, ticks: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let u: f64 = f.get(11)?.parse().ok()?;
    let s: f64 = f.get(12)?.parse().ok()?;
    Some((u + s) / ticks)
}

fn parse_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// Counters from Redis INFO.
#[derive(Clone, Debug, Default)]
pub struct RedisCounters {
    pub used_memory: u64,
    pub commands: u64,
    /// Read events the server processed: one per round trip of a client
    /// (a pipeline of many commands read at once counts once).
    pub reads: u64,
    /// Calls per command name (commandstats), e.g. `evalsha`, `wait`.
    pub calls: std::collections::BTreeMap<String, u64>,
}

impl RedisCounters {
    pub fn parse(info: &str) -> RedisCounters {
        let get = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let calls = info
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let n = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
                Some((name.to_string(), n))
            })
            .collect();
        RedisCounters { used_memory: get("used_memory"), commands: get("total_commands_processed"), reads: get("total_reads_processed"), calls }
    }

    /// Calls per command name between `self` and a later `after`, per `per`.
    pub fn calls_between(&self, after: &RedisCounters, per: f64) -> std::collections::BTreeMap<String, f64> {
        after
            .calls
            .iter()
            .filter_map(|(k, n)| {
                let d = n.saturating_sub(*self.calls.get(k).unwrap_or(&0));
                (d > 0).then(|| (k.clone(), d as f64 / per))
            })
            .collect()
    }

    pub async fn read(conn: &mut redis::aio::MultiplexedConnection) -> Result<RedisCounters, redis::RedisError> {
        let info: String = redis::cmd("INFO").arg("all").query_async(conn).await?;
        Ok(RedisCounters::parse(&info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat_with_spaces_in_the_name() {
        let stat = "1234 (my worker) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_cpu(stat, 100.0), Some(3.0));
        assert_eq!(parse_kb("Name:\tx\nVmHWM:\t  2048 kB\n", "VmHWM:"), Some(2048));
    }

    #[test]
    fn reads_info_fields_exactly() {
        let c = RedisCounters::parse("used_memory:1000\r\nused_memory_rss:5000\r\ntotal_commands_processed:42\r\ntotal_reads_processed:7\r\n");
        assert_eq!((c.used_memory, c.commands, c.reads), (1000, 42, 7));
        let a = RedisCounters::parse("cmdstat_evalsha:calls=10,usec=5,usec_per_call=0.50\r\ncmdstat_wait:calls=1,usec=1\r\n");
        let b = RedisCounters::parse("cmdstat_evalsha:calls=30,usec=9,usec_per_call=0.30\r\ncmdstat_wait:calls=1,usec=1\r\ncmdstat_hget:calls=4,usec=1\r\n");
        let per = a.calls_between(&b, 2.0);
        assert_eq!(per.into_iter().collect::<Vec<_>>(), vec![("evalsha".to_string(), 10.0), ("hget".to_string(), 2.0)]);
    }

    #[test]
    fn own_process_has_cpu_and_rss() {
        let s = ProcStats::read(std::process::id());
        assert!(s.peak_rss_bytes > 0);
        assert!(s.cpu_secs >= 0.0);
    }
}
