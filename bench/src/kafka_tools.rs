//! Apache Kafka's own perf tools (ProducerPerformance and ConsumerPerformance, the classes behind
//! kafka-producer-perf-test.sh and kafka-consumer-perf-test.sh) against one broker. Their figures
//! come from Kafka's Java client, so they cross-check `spool-bench run` with a client Spool did
//! not write, and are the numbers people already know from Kafka.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::BenchError;
use crate::machine;
use crate::result::{ConsumerPerf, ProducerPerf, ToolsResult};

/// A tool run is killed after this long, or after `records / TOOL_RECORDS_PER_S_MIN` seconds if
/// that is longer, so a wedged broker fails the step instead of hanging the harness.
const TOOL_RUN_MAX: Duration = Duration::from_secs(120);
/// The slowest rate a healthy broker is assumed to reach; only sizes the kill timeout.
const TOOL_RECORDS_PER_S_MIN: u64 = 10_000;
/// ConsumerPerformance's own `--timeout`: how long it waits without a record before it gives up
/// (its default of 10 s can pass during a group join on a loaded machine, ending the run early
/// with a partial count that still exits 0).
const CONSUMER_IDLE_MS_MAX: u64 = 60_000;
/// Lines of a failed tool's output quoted in the error.
const TAIL_LINES_MAX: usize = 25;

pub fn main(args: crate::ToolsArgs) -> Result<(), BenchError> {
    check_libs(&args.libs)?;
    let props = producer_props(&args.producer_props)?;
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let topic = format!("perf-tools-{}-{now_s}", std::process::id());
    let classpath = format!("{}/*", args.libs.display());
    let bootstrap = args.bootstrap.as_str();
    let records = args.records.to_string();
    let timeout = TOOL_RUN_MAX.max(Duration::from_secs(args.records / TOOL_RECORDS_PER_S_MIN));

    let rf = args.replication_factor.to_string();
    let partitions = args.partitions.to_string();
    let mut create_flags: Vec<&str> = vec![
        "--bootstrap-server",
        bootstrap,
        "--create",
        "--topic",
        &topic,
        "--partitions",
        &partitions,
        "--replication-factor",
        &rf,
    ];
    for c in &args.topic_configs {
        create_flags.extend(["--config", c.as_str()]);
    }
    let create = java_args(
        &classpath,
        "org.apache.kafka.tools.TopicCommand",
        create_flags,
    );
    let mut produce_flags: Vec<String> = [
        "--bootstrap-server",
        bootstrap,
        "--topic",
        &topic,
        "--num-records",
        &records,
        "--record-size",
        &args.record_size.to_string(),
        "--throughput",
        "-1",
        "--command-property",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    produce_flags.extend(props);
    let produce = java_args(
        &classpath,
        "org.apache.kafka.tools.ProducerPerformance",
        produce_flags.iter().map(String::as_str),
    );
    let consume = java_args(
        &classpath,
        "org.apache.kafka.tools.ConsumerPerformance",
        [
            "--bootstrap-server",
            bootstrap,
            "--topic",
            &topic,
            "--group",
            &topic,
            "--num-records",
            &records,
            "--timeout",
            &CONSUMER_IDLE_MS_MAX.to_string(),
        ],
    );
    let commands: Vec<String> = [&create, &produce, &consume]
        .iter()
        .map(|a| command_line(a))
        .collect();

    run_tool("TopicCommand", &create, TOOL_RUN_MAX)?;

    let pids = &args.target.broker_pids;
    let start = if pids.is_empty() {
        None
    } else {
        if !machine::reset_peak_rss_all(pids) {
            eprintln!(
                "kafka-tools: could not reset peak RSS of pids {pids:?}; the peak may include start-up"
            );
        }
        Some(machine::snapshot_sum(pids).ok_or_else(|| {
            BenchError::Usage(format!("--broker-pid {pids:?}: no such process in /proc"))
        })?)
    };

    let out = run_tool("ProducerPerformance", &produce, timeout)?;
    let producer = parse_producer(&out.stdout)
        .ok_or_else(|| tool_error("ProducerPerformance", "no summary line in its output", &out))?;
    if producer.records != args.records {
        return Err(tool_error(
            "ProducerPerformance",
            &format!(
                "{} of {} records acknowledged (send errors?)",
                producer.records, args.records
            ),
            &out,
        ));
    }

    let out = run_tool("ConsumerPerformance", &consume, timeout)?;
    let consumer = parse_consumer(&out.stdout)
        .ok_or_else(|| tool_error("ConsumerPerformance", "no CSV result in its output", &out))?;
    // It exits 0 when its idle timeout expires, with whatever it read by then.
    if consumer.records < args.records {
        return Err(tool_error(
            "ConsumerPerformance",
            &format!("read {} of {} records", consumer.records, args.records),
            &out,
        ));
    }

    let broker = match start {
        Some(before) => {
            let after = machine::snapshot_sum(pids).ok_or_else(|| {
                BenchError::Usage(format!("a broker of pids {pids:?} exited during the run"))
            })?;
            Some(machine::usage(pids, &before, &after))
        }
        None => None,
    };

    let result = ToolsResult {
        kind: "kafka-tools".to_string(),
        target: args.target.target(),
        machine: machine::machine(),
        versions: machine::versions(args.target.kafka_version.clone()),
        commands,
        record_size: args.record_size,
        partitions: args.partitions,
        producer,
        consumer,
        broker,
    };
    crate::write_json(&args.out, &result)?;
    eprintln!(
        "kafka-tools {}: produce {:.0} records/s ({:.2} MB/s, p99 {} ms), consume {:.0} records/s ({:.2} MB/s)",
        result.target.label,
        result.producer.records_per_s,
        result.producer.mb_per_s,
        result.producer.p99_ms,
        result.consumer.records_per_s,
        result.consumer.mb_per_s,
    );
    Ok(())
}

/// A missing or wrong `--libs` otherwise surfaces as a ClassNotFoundException deep in a JVM's
/// stderr.
fn check_libs(libs: &Path) -> Result<(), BenchError> {
    let entries = std::fs::read_dir(libs)
        .map_err(BenchError::io(format!("reading --libs {}", libs.display())))?;
    let has_tools = entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.starts_with("kafka-tools-") && name.ends_with(".jar")
    });
    if has_tools {
        Ok(())
    } else {
        Err(BenchError::Usage(format!(
            "--libs {}: no kafka-tools-*.jar there (expected Apache Kafka's jars, e.g. \
             tests/.deps/kafka-libs from deploy/kafka.sh fetch)",
            libs.display()
        )))
    }
}

/// acks=all first, so a caller's own `acks=` (later on the line, and the tool keeps the last)
/// overrides it.
fn producer_props(extra: &[String]) -> Result<Vec<String>, BenchError> {
    let mut props = vec!["acks=all".to_string()];
    for p in extra {
        match p.split_once('=') {
            Some((k, _)) if !k.is_empty() => props.push(p.clone()),
            _ => {
                return Err(BenchError::Usage(format!(
                    "--producer-prop {p:?}: expected key=value"
                )))
            }
        }
    }
    Ok(props)
}

fn java_args<'a>(
    classpath: &str,
    class: &str,
    flags: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "java",
        "-Xmx512m",
        // The tools format numbers in the default locale; a decimal comma would break parsing.
        "-Duser.language=en",
        "-Duser.country=US",
        "-cp",
        classpath,
        class,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(flags.into_iter().map(str::to_string));
    args
}

/// The command as a shell would need it typed (the classpath's `*` must reach java unexpanded).
fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct ToolOutput {
    stdout: String,
    stderr: String,
}

fn tool_error(tool: &str, reason: &str, out: &ToolOutput) -> BenchError {
    BenchError::Tool {
        tool: tool.to_string(),
        reason: format!("{reason}; last lines of its output:\n{}", tail(out)),
    }
}

fn tail(out: &ToolOutput) -> String {
    let lines: Vec<&str> = out.stdout.lines().chain(out.stderr.lines()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES_MAX)..].join("\n")
}

/// Runs `args` (argv[0] from PATH) to completion or `timeout`, whichever comes first.
fn run_tool(tool: &str, args: &[String], timeout: Duration) -> Result<ToolOutput, BenchError> {
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BenchError::io(format!(
            "starting {} for {tool} (is a JDK on PATH?)",
            args[0]
        )))?;
    // Both pipes drain on their own threads: a tool blocked on a full stderr pipe would
    // otherwise never exit and look like a timeout.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, timeout);
    let out = ToolOutput {
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    match status {
        Ok(Some(status)) if status.success() => Ok(out),
        Ok(Some(status)) => Err(tool_error(tool, &format!("exited with {status}"), &out)),
        Ok(None) => Err(tool_error(
            tool,
            &format!("killed after {timeout:?} without finishing"),
            &out,
        )),
        Err(e) => Err(BenchError::io(format!("waiting for {tool}"))(e)),
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `Ok(None)` when the child outlived `timeout` and was killed.
fn wait_bounded(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The final summary line of ProducerPerformance:
/// `N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency,
/// P ms 50th, P ms 95th, P ms 99th, P ms 99.9th.`
/// Progress lines share the prefix but stop at max latency, so the percentiles pick the summary.
pub fn parse_producer(stdout: &str) -> Option<ProducerPerf> {
    stdout
        .lines()
        .rev()
        .find(|l| l.contains(" records sent, ") && l.contains("99.9th"))
        .and_then(parse_producer_line)
}

fn parse_producer_line(line: &str) -> Option<ProducerPerf> {
    let mut perf = ProducerPerf::default();
    let mut seen = 0u32;
    for part in line.trim().trim_end_matches('.').split(", ") {
        let (number, unit) = part.split_once(' ')?;
        match unit {
            "records sent" => perf.records = number.parse().ok()?,
            u if u.starts_with("records/sec (") && u.ends_with(" MB/sec)") => {
                perf.records_per_s = number.parse().ok()?;
                perf.mb_per_s = u
                    .trim_start_matches("records/sec (")
                    .trim_end_matches(" MB/sec)")
                    .parse()
                    .ok()?;
            }
            "ms avg latency" => perf.avg_latency_ms = number.parse().ok()?,
            "ms max latency" => perf.max_latency_ms = number.parse().ok()?,
            "ms 50th" => perf.p50_ms = number.parse().ok()?,
            "ms 95th" => perf.p95_ms = number.parse().ok()?,
            "ms 99th" => perf.p99_ms = number.parse().ok()?,
            "ms 99.9th" => perf.p999_ms = number.parse().ok()?,
            _ => continue,
        }
        seen += 1;
    }
    (seen == 8).then_some(perf)
}

/// ConsumerPerformance's result: a header line starting `start.time, end.time, ...` and one
/// comma-separated data line under it. Columns are found by header name, not position, so an
/// added column in a later Kafka does not shift the rest.
pub fn parse_consumer(stdout: &str) -> Option<ConsumerPerf> {
    let mut lines = stdout.lines().map(str::trim);
    let header: Vec<&str> = lines
        .by_ref()
        .find(|l| l.starts_with("start.time,"))?
        .split(',')
        .map(str::trim)
        .collect();
    // Not simply the next line: on an idle timeout a WARNING line comes between the two.
    let values: Vec<&str> = lines
        .map(|l| l.split(',').map(str::trim).collect::<Vec<_>>())
        .find(|v| v.len() == header.len())?;
    let column = |name: &str| -> Option<&str> {
        let i = header.iter().position(|h| *h == name)?;
        Some(values[i])
    };
    let float = |name: &str| -> Option<f64> { column(name)?.parse().ok() };
    Some(ConsumerPerf {
        mb: float("data.consumed.in.MB")?,
        mb_per_s: float("MB.sec")?,
        records: column("data.consumed.in.nMsg")?.parse().ok()?,
        records_per_s: float("nMsg.sec")?,
        rebalance_ms: float("rebalance.time.ms")?,
        fetch_ms: float("fetch.time.ms")?,
        fetch_mb_per_s: float("fetch.MB.sec")?,
        fetch_records_per_s: float("fetch.nMsg.sec")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from Apache Kafka 4.3.1's tools against a local Kafka 4.3.1 broker.
    const PRODUCER_OUT: &str = "\
86708 records sent, 17341.6 records/sec (16.94 MB/sec), 1265.3 ms avg latency, 1863.0 ms max latency.
246240 records sent, 49248.0 records/sec (48.09 MB/sec), 655.7 ms avg latency, 1072.0 ms max latency.
600000 records sent, 45889.101338 records/sec (44.81 MB/sec), 614.37 ms avg latency, 1863.00 ms max latency, 467 ms 50th, 1383 ms 95th, 1777 ms 99th, 1855 ms 99.9th.
";

    const CONSUMER_OUT: &str = "\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-11-24 19:40:08:636, 2026-11-24 19:40:10:621, 585.9375, 295.1826, 600000, 302267.0025, 320, 1665, 351.9144, 360360.3604
";

    // ConsumerPerformance after its --timeout expired with 200000 of 300000 records read.
    const CONSUMER_TIMED_OUT: &str = "\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
WARNING: Exiting before consuming the expected number of records: timeout (3000 ms) exceeded. You can use the --timeout option to increase the timeout.
2026-11-24 19:40:14:495, 2026-11-24 19:40:18:598, 195.3125, 47.6024, 200000, 48744.8209, 293, 3810, 51.2631, 52493.4383
";

    #[test]
    fn parses_producer_summary_after_progress_lines() {
        assert_eq!(
            parse_producer(PRODUCER_OUT),
            Some(ProducerPerf {
                records: 600_000,
                records_per_s: 45889.101338,
                mb_per_s: 44.81,
                avg_latency_ms: 614.37,
                max_latency_ms: 1863.0,
                p50_ms: 467.0,
                p95_ms: 1383.0,
                p99_ms: 1777.0,
                p999_ms: 1855.0,
            })
        );
    }

    #[test]
    fn producer_progress_lines_alone_are_no_summary() {
        let progress: String = PRODUCER_OUT.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(parse_producer(&progress), None);
        assert_eq!(parse_producer(""), None);
        let garbled = PRODUCER_OUT.replace("45889.101338", "45889,101338");
        assert_eq!(parse_producer(&garbled), None);
    }

    #[test]
    fn parses_consumer_csv() {
        assert_eq!(
            parse_consumer(CONSUMER_OUT),
            Some(ConsumerPerf {
                mb: 585.9375,
                mb_per_s: 295.1826,
                records: 600_000,
                records_per_s: 302267.0025,
                rebalance_ms: 320.0,
                fetch_ms: 1665.0,
                fetch_mb_per_s: 351.9144,
                fetch_records_per_s: 360360.3604,
            })
        );
    }

    #[test]
    fn parses_consumer_csv_past_a_timeout_warning() {
        let perf = parse_consumer(CONSUMER_TIMED_OUT).expect("parses");
        assert_eq!(perf.records, 200_000);
        assert_eq!(perf.fetch_ms, 3810.0);
        let header_only: String = CONSUMER_OUT.lines().take(1).collect();
        assert_eq!(parse_consumer(&header_only), None);
    }

    #[test]
    fn quotes_only_what_a_shell_would_mangle() {
        let args = java_args(
            "/libs dir/*",
            "org.apache.kafka.tools.TopicCommand",
            ["--topic", "it's"],
        );
        assert_eq!(
            command_line(&args),
            "java -Xmx512m -Duser.language=en -Duser.country=US -cp '/libs dir/*' \
             org.apache.kafka.tools.TopicCommand --topic 'it'\\''s'"
        );
    }

    #[test]
    fn a_failing_tool_reports_its_status_and_output() {
        let args = ["sh", "-c", "echo started; echo boom >&2; exit 3"].map(String::from);
        let err = run_tool("sh", &args, Duration::from_secs(10))
            .err()
            .expect("non-zero exit is an error")
            .to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("started\nboom"), "{err}");
    }

    #[test]
    fn a_hung_tool_is_killed_at_its_timeout() {
        let args = ["sh", "-c", "echo waiting; exec sleep 30"].map(String::from);
        let started = Instant::now();
        let err = run_tool("sleep", &args, Duration::from_millis(300))
            .err()
            .expect("timeout is an error")
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err.contains("killed after 300ms"), "{err}");
        assert!(err.contains("waiting"), "{err}");
    }

    #[test]
    fn producer_props_default_to_acks_all_and_reject_bare_keys() {
        let props = producer_props(&["linger.ms=5".to_string()]).expect("valid");
        assert_eq!(props, ["acks=all", "linger.ms=5"]);
        assert!(producer_props(&["linger.ms".to_string()]).is_err());
        assert!(producer_props(&["=5".to_string()]).is_err());
    }
}
