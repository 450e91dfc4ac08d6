//! `spool-bench report`: gathers a directory of result JSON into report.json, then renders
//! report.md and the SVG plots from that `Report` alone.
//!
//! Rendering reads nothing but the `Report`, so a report.json copied off the benchmark machine
//! (or an old one, after the rendering changes) renders to the same Markdown and plots.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::BenchError;
use crate::result::{CeilingResult, Latency, Report, RunResult, ToolsResult};
use crate::svg;
use crate::workload::{KeyDistributor, Workload};

pub const REPORT_JSON: &str = "report.json";
pub const REPORT_MD: &str = "report.md";

/// What a table shows for a figure that was not measured.
const MISSING: &str = "–";
const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

pub fn main(args: crate::ReportArgs) -> Result<(), BenchError> {
    let report = gather(&args.results, &args.command)?;
    let out_dir = args.out_dir.unwrap_or(args.results);
    std::fs::create_dir_all(&out_dir)
        .map_err(BenchError::io(format!("creating {}", out_dir.display())))?;
    crate::write_json(&out_dir.join(REPORT_JSON), &report)?;
    for (file, svg) in render_plots(&report) {
        write_text(&out_dir.join(file), &svg)?;
    }
    write_text(&out_dir.join(REPORT_MD), &render_markdown(&report))
}

/// Only the `kind` of a result file, to pick the type that reads the whole file.
#[derive(Deserialize)]
struct Kind {
    kind: Option<String>,
}

/// Reads every result file in `dir` into one `Report`, runs sorted by (workload, target).
pub fn gather(dir: &Path, command: &str) -> Result<Report, BenchError> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(BenchError::io(format!("reading {}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(BenchError::io(format!("reading {}", dir.display())))?
            .path();
        let is_json = path.extension().is_some_and(|e| e == "json");
        // report.json is this command's own output; reading it back would double every run.
        let is_report = path.file_name().is_some_and(|n| n == REPORT_JSON);
        if is_json && !is_report && path.is_file() {
            paths.push(path);
        }
    }
    // read_dir's order is the file system's; sorting makes "the first result" reproducible.
    paths.sort();

    let mut runs: Vec<RunResult> = Vec::new();
    let mut tools: Vec<ToolsResult> = Vec::new();
    let mut ceilings: Vec<(PathBuf, CeilingResult)> = Vec::new();
    // Machine and versions of each result in file order, to pick the first and spot mixtures.
    let mut origins = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path)
            .map_err(BenchError::io(format!("reading {}", path.display())))?;
        let malformed =
            |e: serde_json::Error| BenchError::Report(format!("{}: {e}", path.display()));
        let kind = serde_json::from_str::<Kind>(&text)
            .map_err(malformed)?
            .kind
            .ok_or_else(|| BenchError::Report(format!("{}: no \"kind\" field", path.display())))?;
        match kind.as_str() {
            "workload" => {
                let run: RunResult = serde_json::from_str(&text).map_err(malformed)?;
                origins.push((run.machine.clone(), Some(run.versions.clone())));
                runs.push(run);
            }
            "kafka-tools" => {
                let result: ToolsResult = serde_json::from_str(&text).map_err(malformed)?;
                origins.push((result.machine.clone(), Some(result.versions.clone())));
                tools.push(result);
            }
            "ceiling" => {
                let result: CeilingResult = serde_json::from_str(&text).map_err(malformed)?;
                origins.push((result.machine.clone(), None));
                ceilings.push((path.clone(), result));
            }
            other => {
                return Err(BenchError::Report(format!(
                    "{}: unknown kind {other:?} (expected \"workload\", \"kafka-tools\" or \"ceiling\")",
                    path.display()
                )))
            }
        }
    }
    if origins.is_empty() {
        return Err(BenchError::Report(format!(
            "no result files (*.json) in {}",
            dir.display()
        )));
    }

    let machine = origins[0].0.clone();
    let mut versions = origins
        .iter()
        .find_map(|(_, v)| v.clone())
        .unwrap_or_default();
    // Spool runs carry no Kafka version; the report needs the one from the Kafka runs.
    if versions.kafka.is_none() {
        versions.kafka = origins
            .iter()
            .find_map(|(_, v)| v.as_ref().and_then(|v| v.kafka.clone()));
    }
    // The report states one machine and one Spool revision; say so when that is not the truth.
    if origins.iter().any(|(m, _)| m.hostname != machine.hostname) {
        eprintln!(
            "spool-bench report: warning: results come from more than one host; the report names {}",
            machine.hostname
        );
    }
    if origins
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .any(|v| v.spool_git != versions.spool_git)
    {
        eprintln!(
            "spool-bench report: warning: results come from more than one Spool revision; the report names {}",
            versions.spool_git
        );
    }
    if ceilings.len() > 1 {
        eprintln!(
            "spool-bench report: warning: {} ceiling results; using {}",
            ceilings.len(),
            ceilings[0].0.display()
        );
    }

    runs.sort_by(|a, b| (&a.workload.name, &a.target).cmp(&(&b.workload.name, &b.target)));
    tools.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(Report {
        kind: "report".to_string(),
        machine,
        versions,
        command: command.to_string(),
        ceiling: ceilings.into_iter().next().map(|(_, c)| c),
        runs,
        tools,
    })
}

/// The SVG plots of every workload as (file name, contents); the names `render_markdown` links.
pub fn render_plots(report: &Report) -> Vec<(String, String)> {
    groups(report)
        .iter()
        .flat_map(|g| {
            PlotKind::ALL
                .into_iter()
                .filter(|kind| kind.applies(&g.runs))
                .map(|kind| (kind.file_name(&g.stem), kind.render(g.name, &g.runs)))
        })
        .collect()
}

/// The whole report as Markdown.
pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_markdown(&mut out, report);
    out
}

/// One row per workload × target: the figures the README quotes.
pub fn headline_table(report: &Report) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_headline_table(&mut out, report);
    out
}

fn write_text(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(BenchError::io(format!("writing {}", path.display())))
}

/// The runs of one workload, in report order.
struct Group<'a> {
    name: &'a str,
    /// `name` made safe for a file name, unique within the report.
    stem: String,
    runs: Vec<&'a RunResult>,
}

fn groups(report: &Report) -> Vec<Group<'_>> {
    let mut groups: Vec<Group> = Vec::new();
    for run in &report.runs {
        match groups.iter_mut().find(|g| g.name == run.workload.name) {
            Some(g) => g.runs.push(run),
            None => groups.push(Group {
                name: &run.workload.name,
                stem: String::new(),
                runs: vec![run],
            }),
        }
    }
    // OMB workload names contain spaces and slashes; two may sanitize to the same stem.
    let mut used = HashSet::new();
    for g in &mut groups {
        let base = file_stem(g.name);
        let mut stem = base.clone();
        let mut n = 2;
        while !used.insert(stem.clone()) {
            stem = format!("{base}-{n}");
            n += 1;
        }
        g.stem = stem;
    }
    groups
}

fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(80)
        .collect();
    if stem.is_empty() {
        "workload".to_string()
    } else {
        stem
    }
}

#[derive(Clone, Copy)]
enum PlotKind {
    PublishLatency,
    EndToEndLatency,
    Throughput,
}

impl PlotKind {
    const ALL: [PlotKind; 3] = [
        PlotKind::PublishLatency,
        PlotKind::EndToEndLatency,
        PlotKind::Throughput,
    ];

    fn file_name(self, stem: &str) -> String {
        let suffix = match self {
            PlotKind::PublishLatency => "publish-latency",
            PlotKind::EndToEndLatency => "e2e-latency",
            PlotKind::Throughput => "throughput",
        };
        format!("{stem}-{suffix}.svg")
    }

    fn title(self, workload: &str) -> String {
        match self {
            PlotKind::PublishLatency => format!("{workload}: publish latency (send → ack)"),
            PlotKind::EndToEndLatency => format!("{workload}: end-to-end latency (send → consume)"),
            PlotKind::Throughput => {
                format!("{workload}: throughput (solid: publish, dashed: consume)")
            }
        }
    }

    fn latency(self, run: &RunResult) -> Option<&Latency> {
        match self {
            PlotKind::PublishLatency => run.publish_latency.as_ref(),
            PlotKind::EndToEndLatency => run.end_to_end_latency.as_ref(),
            PlotKind::Throughput => None,
        }
    }

    /// Whether any run has data for this plot; an empty plot is not worth a file.
    fn applies(self, runs: &[&RunResult]) -> bool {
        match self {
            PlotKind::Throughput => runs.iter().any(|r| !r.timeline.is_empty()),
            _ => runs
                .iter()
                .any(|r| self.latency(r).is_some_and(|l| !l.percentiles.is_empty())),
        }
    }

    /// Every run gets a series, even without data, so a target keeps its colour across plots.
    fn render(self, workload: &str, runs: &[&RunResult]) -> String {
        let title = self.title(workload);
        match self {
            PlotKind::Throughput => {
                let publish: Vec<Vec<(f64, f64)>> = runs
                    .iter()
                    .map(|r| r.timeline.iter().map(|s| (s.t_s, s.publish_mb_s)).collect())
                    .collect();
                let consume: Vec<Vec<(f64, f64)>> = runs
                    .iter()
                    .map(|r| {
                        // Without consumers the line would sit on the x axis, hiding nothing
                        // but adding clutter.
                        if r.timeline.iter().all(|s| s.consume_mb_s == 0.0) {
                            Vec::new()
                        } else {
                            r.timeline.iter().map(|s| (s.t_s, s.consume_mb_s)).collect()
                        }
                    })
                    .collect();
                let series: Vec<(&str, &[(f64, f64)])> = runs
                    .iter()
                    .zip(&publish)
                    .map(|(r, p)| (r.target.label.as_str(), p.as_slice()))
                    .collect();
                let consume: Vec<&[(f64, f64)]> = consume.iter().map(Vec::as_slice).collect();
                svg::throughput_timeline(&title, &series, &consume, warmup_end_s(runs))
            }
            _ => {
                let series: Vec<(&str, &[(f64, u64)])> = runs
                    .iter()
                    .map(|r| {
                        let points = self.latency(r).map_or(&[][..], |l| &l.percentiles[..]);
                        (r.target.label.as_str(), points)
                    })
                    .collect();
                svg::latency_percentiles(&title, &series)
            }
        }
    }

    fn alt(self, workload: &str) -> String {
        match self {
            PlotKind::PublishLatency => format!("{workload}: publish latency by percentile"),
            PlotKind::EndToEndLatency => format!("{workload}: end-to-end latency by percentile"),
            PlotKind::Throughput => format!("{workload}: MB/s over time"),
        }
    }
}

/// Where the warm-up ends on the timeline: between the last warm-up sample and the first
/// measured one. The midpoint is within half a sample of the true boundary whichever end of
/// its second a sample is stamped with.
fn warmup_end_s(runs: &[&RunResult]) -> Option<f64> {
    runs.iter().find_map(|r| {
        let last_warmup = r
            .timeline
            .iter()
            .filter(|s| s.warmup)
            .map(|s| s.t_s)
            .reduce(f64::max)?;
        let first_measured = r
            .timeline
            .iter()
            .filter(|s| !s.warmup)
            .map(|s| s.t_s)
            .reduce(f64::min)?;
        Some((last_warmup + first_measured) / 2.0)
    })
}

fn write_markdown(out: &mut String, report: &Report) -> std::fmt::Result {
    let m = &report.machine;
    let v = &report.versions;
    writeln!(out, "# Spool and Apache Kafka: benchmark report\n")?;
    writeln!(
        out,
        "- **Machine:** {}, {} cores, {:.1} GiB memory, Linux {} (host {})",
        text_or_missing(&m.cpu_model),
        m.cores,
        m.mem_bytes as f64 / GIB,
        text_or_missing(&m.kernel),
        inline_code(&m.hostname)
    )?;
    writeln!(
        out,
        "- **Versions:** Spool {} (spool-bench {}); Apache Kafka {}",
        inline_code(&v.spool_git),
        text_or_missing(&v.bench),
        v.kafka.as_deref().map_or(MISSING, text_or_missing)
    )?;
    match &report.ceiling {
        Some(c) => writeln!(
            out,
            "- **Ceilings:** loopback TCP {} MB/s (one sender and one receiver thread); \
             O_DIRECT sequential write {} MB/s ({} blocks, one fdatasync, into {})",
            num(c.loopback_tcp_mb_per_s, 1),
            num(c.odirect_write_mb_per_s, 1),
            block_size(c.block_bytes),
            inline_code(&c.data_dir)
        )?,
        None => writeln!(out, "- **Ceilings:** not measured")?,
    }
    if report.command.trim().is_empty() {
        writeln!(out, "- **Command:** not recorded")?;
    } else {
        writeln!(out, "- **Command:**\n")?;
        write_code_block(out, "sh", &report.command, "  ")?;
    }

    if !report.runs.is_empty() {
        writeln!(out, "\n## Summary\n")?;
        out.push_str(&headline_table(report));
        writeln!(
            out,
            "\nMB/s is publish throughput; latencies are in milliseconds; RSS is the broker's peak \
             resident memory during the measured window."
        )?;
    }

    for g in groups(report) {
        write_workload(out, &g)?;
    }

    if !report.tools.is_empty() {
        write_tools(out, &report.tools)?;
    }
    Ok(())
}

fn write_headline_table(out: &mut String, report: &Report) -> std::fmt::Result {
    writeln!(
        out,
        "| Workload | Target | MB/s | p99 publish ms | p99.9 e2e ms | Peak RSS MiB |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|")?;
    for r in &report.runs {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&r.workload.name),
            cell(&r.target.label),
            num(r.publish.mb_per_s, 1),
            latency_ms(&r.publish_latency, |l| l.p99_us),
            latency_ms(&r.end_to_end_latency, |l| l.p999_us),
            r.broker
                .as_ref()
                .map_or_else(|| MISSING.to_string(), |b| mib(b.peak_rss_bytes))
        )?;
    }
    Ok(())
}

fn write_workload(out: &mut String, g: &Group) -> std::fmt::Result {
    writeln!(out, "\n## {}\n", g.name)?;
    let runs = &g.runs;
    // Runs of one workload share its file, so the first describes them all.
    writeln!(out, "{}.\n", describe(&runs[0].workload))?;
    writeln!(
        out,
        "Rate: {}. Measured {} after {} of warm-up.\n",
        agreed(runs, |r| rate(r.target_rate)),
        agreed(runs, |r| format!("{} s", num(r.measured_s, 0))),
        agreed(runs, |r| format!("{} s", num(r.workload.warmup_s(), 0)))
    )?;

    writeln!(
        out,
        "| Target | Publish MB/s | Records/s | Publish p50 ms | p99 | p99.9 | p99.99 | max \
         | E2E p50 ms | E2E p99 | E2E p99.9 | Consume MB/s | Broker CPU s | CPU s/GB \
         | Peak RSS MiB | Disk written MiB | Errors |"
    )?;
    writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for r in runs {
        let p = &r.publish_latency;
        let e = &r.end_to_end_latency;
        let broker = |f: fn(&crate::result::BrokerUsage) -> String| {
            r.broker.as_ref().map_or_else(|| MISSING.to_string(), f)
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.target.label),
            num(r.publish.mb_per_s, 1),
            count_f(r.publish.records_per_s),
            latency_ms(p, |l| l.p50_us),
            latency_ms(p, |l| l.p99_us),
            latency_ms(p, |l| l.p999_us),
            latency_ms(p, |l| l.p9999_us),
            latency_ms(p, |l| l.max_us),
            latency_ms(e, |l| l.p50_us),
            latency_ms(e, |l| l.p99_us),
            latency_ms(e, |l| l.p999_us),
            num(r.consume.mb_per_s, 1),
            broker(|b| num(b.cpu_s, 1)),
            cpu_per_gb(r).map_or_else(|| MISSING.to_string(), |c| num(c, 1)),
            broker(|b| mib(b.peak_rss_bytes)),
            broker(|b| mib(b.disk_write_bytes)),
            count(r.errors)
        )?;
    }

    if runs.iter().any(|r| r.target.brokers > 1) {
        writeln!(
            out,
            "\nA target of several brokers: CPU, peak RSS and disk written are sums over its \
             broker processes (RSS: the sum of each process's own peak)."
        )?;
    }
    writeln!(
        out,
        "\nCPU s/GB: broker CPU seconds per GB (10⁹ bytes) of record payload published."
    )?;

    write_ratios(out, runs)?;

    if runs.iter().any(|r| r.catch_up.is_some()) {
        writeln!(
            out,
            "\nCatch-up read (consumers start against the backlog while producers keep going):\n"
        )?;
        writeln!(
            out,
            "| Target | Backlog GiB | Drain s | Read MB/s | Read records/s |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|")?;
        for r in runs {
            if let Some(c) = &r.catch_up {
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    cell(&r.target.label),
                    num(c.backlog_bytes as f64 / GIB, 2),
                    num(c.drain_s, 1),
                    num(c.read_mb_per_s, 1),
                    count_f(c.read_records_per_s)
                )?;
            }
        }
    }

    // A blank line before each image: images on consecutive lines share one paragraph and
    // would be squeezed side by side.
    for kind in PlotKind::ALL.into_iter().filter(|k| k.applies(runs)) {
        writeln!(
            out,
            "\n![{}]({})",
            kind.alt(g.name).replace(['[', ']'], ""),
            kind.file_name(&g.stem)
        )?;
    }
    Ok(())
}

/// Spool against each Kafka target of the same workload.
fn write_ratios(out: &mut String, runs: &[&RunResult]) -> std::fmt::Result {
    let spools: Vec<&RunResult> = runs
        .iter()
        .copied()
        .filter(|r| r.target.system == "spool")
        .collect();
    let kafkas: Vec<&RunResult> = runs
        .iter()
        .copied()
        .filter(|r| r.target.system == "kafka")
        .collect();
    if spools.is_empty() || kafkas.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nRatios (throughput is Spool ÷ Kafka, above 1 = Spool faster; latency and memory are \
         Kafka ÷ Spool, \"N× lower\" = Spool's is N times lower):\n"
    )?;
    let p99 = |r: &RunResult| r.publish_latency.as_ref().map(|l| l.p99_us as f64);
    let e2e = |r: &RunResult| r.end_to_end_latency.as_ref().map(|l| l.p999_us as f64);
    let rss = |r: &RunResult| r.broker.as_ref().map(|b| b.peak_rss_bytes as f64);
    for s in &spools {
        for k in &kafkas {
            writeln!(
                out,
                "- **{} vs {}:** throughput {} · p99 publish latency {} · p99.9 end-to-end latency {} · peak RSS {} · CPU per GB {}",
                s.target.label,
                k.target.label,
                more_is_better(Some(s.publish.mb_per_s), Some(k.publish.mb_per_s)),
                less_is_better(p99(s), p99(k)),
                less_is_better(e2e(s), e2e(k)),
                less_is_better(rss(s), rss(k)),
                less_is_better(cpu_per_gb(s), cpu_per_gb(k))
            )?;
        }
    }
    Ok(())
}

/// Broker CPU seconds per GB of payload published in the measured window.
fn cpu_per_gb(r: &RunResult) -> Option<f64> {
    let b = r.broker.as_ref()?;
    (r.publish.bytes > 0).then(|| b.cpu_s / (r.publish.bytes as f64 / 1e9))
}

fn write_tools(out: &mut String, tools: &[ToolsResult]) -> std::fmt::Result {
    writeln!(out, "\n## Kafka's own perf tools\n")?;
    writeln!(
        out,
        "Apache Kafka's `kafka-producer-perf-test` (ProducerPerformance) and \
         `kafka-consumer-perf-test` (ConsumerPerformance), unchanged, against each broker. \
         Broker CPU and peak RSS cover both tools.\n"
    )?;
    writeln!(
        out,
        "| Target | Records | Record bytes | Partitions | Records/s | MB/s | avg ms | p50 ms \
         | p95 ms | p99 ms | p99.9 ms | max ms | Broker CPU s | Peak RSS MiB |"
    )?;
    writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for t in tools {
        let p = &t.producer;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&t.target.label),
            count(p.records),
            t.record_size,
            t.partitions,
            count_f(p.records_per_s),
            num(p.mb_per_s, 1),
            num(p.avg_latency_ms, 2),
            num(p.p50_ms, 2),
            num(p.p95_ms, 2),
            num(p.p99_ms, 2),
            num(p.p999_ms, 2),
            num(p.max_latency_ms, 2),
            t.broker
                .as_ref()
                .map_or_else(|| MISSING.to_string(), |b| num(b.cpu_s, 1)),
            t.broker
                .as_ref()
                .map_or_else(|| MISSING.to_string(), |b| mib(b.peak_rss_bytes))
        )?;
    }
    writeln!(out, "\nConsumerPerformance:\n")?;
    writeln!(
        out,
        "| Target | Records | MB | MB/s | Records/s | Rebalance ms | Fetch ms | Fetch MB/s \
         | Fetch records/s |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for t in tools {
        let c = &t.consumer;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&t.target.label),
            count(c.records),
            num(c.mb, 1),
            num(c.mb_per_s, 1),
            count_f(c.records_per_s),
            num(c.rebalance_ms, 0),
            num(c.fetch_ms, 0),
            num(c.fetch_mb_per_s, 1),
            count_f(c.fetch_records_per_s)
        )?;
    }
    writeln!(out, "\nCommands:")?;
    for t in tools {
        writeln!(out, "\n{}:\n", t.target.label)?;
        write_code_block(out, "sh", &t.commands.join("\n"), "")?;
    }
    Ok(())
}

fn describe(w: &Workload) -> String {
    let keys = match w.key_distributor {
        KeyDistributor::NoKey => "no keys (sticky partitioning)",
        KeyDistributor::KeyRoundRobin => "keys from a fixed pool",
        KeyDistributor::RandomNano => "a random key per record",
    };
    let mut parts = vec![
        format!(
            "{} × {} partitions",
            plural(w.topics.into(), "topic"),
            w.partitions_per_topic
        ),
        format!(
            "{}-byte records ({}% random bytes)",
            w.message_size,
            num(w.random_bytes_ratio * 100.0, 0)
        ),
        plural(w.producers().into(), "producer"),
        format!(
            "{} in {}",
            plural(w.consumers().into(), "consumer"),
            plural(
                (w.topics * w.subscriptions_per_topic).into(),
                "subscription"
            )
        ),
        keys.to_string(),
        format!("acks={}", w.acks),
        format!("compression {}", w.compression),
        format!(
            "batch {} KiB, linger {} ms, {} in flight per connection",
            w.batch_bytes / 1024,
            w.linger_ms,
            w.inflight_per_connection
        ),
    ];
    if w.consumer_backlog_size_gb > 0.0 {
        parts.push(format!(
            "catch-up read of a {} GiB backlog",
            num(w.consumer_backlog_size_gb, 2)
        ));
    }
    parts.join(", ")
}

/// One value when every run agrees, else each target's own, so the text never hides that the
/// runs differed.
fn agreed(runs: &[&RunResult], f: impl Fn(&RunResult) -> String) -> String {
    let values: Vec<String> = runs.iter().map(|r| f(r)).collect();
    match values.first() {
        Some(first) if values.iter().all(|v| v == first) => first.clone(),
        _ => runs
            .iter()
            .zip(&values)
            .map(|(r, v)| format!("{v} ({})", r.target.label))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn rate(records_per_s: u64) -> String {
    if records_per_s == 0 {
        "max (closed loop)".to_string()
    } else {
        format!("{} records/s", count(records_per_s))
    }
}

/// Spool ÷ Kafka.
fn more_is_better(spool: Option<f64>, kafka: Option<f64>) -> String {
    match (spool, kafka) {
        (Some(s), Some(k)) if s.is_finite() && k.is_finite() && k > 0.0 => {
            format!("{}×", ratio(s / k))
        }
        _ => MISSING.to_string(),
    }
}

/// Kafka ÷ Spool, worded so a reader need not remember which way the division went.
fn less_is_better(spool: Option<f64>, kafka: Option<f64>) -> String {
    match (spool, kafka) {
        (Some(s), Some(k)) if s.is_finite() && k.is_finite() && s > 0.0 && k > 0.0 => {
            let r = k / s;
            if (r - 1.0).abs() < 0.005 {
                "the same".to_string()
            } else if r > 1.0 {
                format!("{}× lower", ratio(r))
            } else {
                format!("{}× higher", ratio(1.0 / r))
            }
        }
        _ => MISSING.to_string(),
    }
}

/// Three significant figures or so: enough to compare, few enough to read.
fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

fn latency_ms(latency: &Option<Latency>, f: fn(&Latency) -> u64) -> String {
    latency
        .as_ref()
        .map_or_else(|| MISSING.to_string(), |l| num(f(l) as f64 / 1000.0, 2))
}

fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        MISSING.to_string()
    }
}

fn mib(bytes: u64) -> String {
    num(bytes as f64 / MIB, 1)
}

/// Thousands separators: record counts run to millions.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn count_f(n: f64) -> String {
    if n.is_finite() && n >= 0.0 {
        count(n.round() as u64)
    } else {
        MISSING.to_string()
    }
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn block_size(bytes: u32) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

fn text_or_missing(s: &str) -> &str {
    if s.trim().is_empty() {
        MISSING
    } else {
        s
    }
}

/// A table cell: a '|' would end the cell and a newline the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\r', '\n'], " ")
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// Backtick fences one longer than any run inside, so the text cannot close the span early.
fn inline_code(s: &str) -> String {
    if s.trim().is_empty() {
        return MISSING.to_string();
    }
    let fence = "`".repeat(longest_backtick_run(s) + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", s.replace(['\r', '\n'], " "))
}

fn write_code_block(out: &mut String, lang: &str, text: &str, indent: &str) -> std::fmt::Result {
    let fence = "`".repeat((longest_backtick_run(text) + 1).max(3));
    writeln!(out, "{indent}{fence}{lang}")?;
    for line in text.lines() {
        writeln!(out, "{indent}{line}")?;
    }
    writeln!(out, "{indent}{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{
        BrokerUsage, CatchUp, ConsumerPerf, Machine, ProducerPerf, Sample, Target, Throughput,
        Versions,
    };

    fn workload(name: &str, rate: u64) -> Workload {
        let yaml = format!(
            "name: {name}\ntopics: 1\npartitionsPerTopic: 16\nmessageSize: 1024\n\
             subscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 4\n\
             producerRate: {rate}\ntestDurationSeconds: 60\nwarmupDurationSeconds: 10\n"
        );
        serde_yaml::from_str(&yaml).expect("test workload parses")
    }

    fn target(system: &str, label: &str) -> Target {
        Target {
            system: system.to_string(),
            mode: "defaults".to_string(),
            label: label.to_string(),
            brokers: 1,
        }
    }

    fn machine() -> Machine {
        Machine {
            hostname: "bench-1".to_string(),
            kernel: "6.1.0".to_string(),
            cpu_model: "Test CPU @ 3.0GHz".to_string(),
            cores: 8,
            mem_bytes: 16 << 30,
        }
    }

    fn latency(p50: u64, p99: u64, p999: u64) -> Latency {
        Latency {
            count: 1000,
            mean_us: p50 as f64,
            p50_us: p50,
            p99_us: p99,
            p999_us: p999,
            p9999_us: p999 * 2,
            max_us: p999 * 3,
            percentiles: vec![(0.0, p50 / 2), (50.0, p50), (99.0, p99), (99.9, p999)],
            histogram: String::new(),
        }
    }

    fn run(
        workload_name: &str,
        system: &str,
        label: &str,
        mb_per_s: f64,
        p99_us: u64,
        e2e_p999_us: u64,
        rss_mib: u64,
    ) -> RunResult {
        RunResult {
            kind: "workload".to_string(),
            target: target(system, label),
            workload: workload(workload_name, 0),
            machine: machine(),
            versions: Versions {
                spool_git: "abc1234".to_string(),
                bench: "0.1.0".to_string(),
                kafka: (system == "kafka").then(|| "3.9.0".to_string()),
            },
            started_unix_s: 1_700_000_000,
            measured_s: 60.0,
            target_rate: 0,
            publish: Throughput {
                records: 1_000_000,
                bytes: 1 << 30,
                records_per_s: mb_per_s * 1000.0,
                mb_per_s,
            },
            consume: Throughput {
                mb_per_s,
                ..Throughput::default()
            },
            publish_latency: Some(latency(p99_us / 4, p99_us, p99_us * 2)),
            end_to_end_latency: Some(latency(e2e_p999_us / 4, e2e_p999_us / 2, e2e_p999_us)),
            timeline: (0..5)
                .map(|t| Sample {
                    t_s: f64::from(t),
                    warmup: t < 2,
                    publish_mb_s: mb_per_s,
                    consume_mb_s: mb_per_s * 0.9,
                    ..Sample::default()
                })
                .collect(),
            broker: Some(BrokerUsage {
                pid: 42,
                pids: vec![42],
                cpu_s: 12.5,
                peak_rss_bytes: rss_mib << 20,
                disk_write_bytes: 3 << 30,
            }),
            catch_up: None,
            errors: 0,
        }
    }

    fn tools(system: &str, label: &str) -> ToolsResult {
        ToolsResult {
            kind: "kafka-tools".to_string(),
            target: target(system, label),
            machine: machine(),
            versions: Versions::default(),
            commands: vec![format!("kafka-producer-perf-test --topic t-{system}")],
            record_size: 1024,
            partitions: 16,
            producer: ProducerPerf {
                records: 1_000_000,
                records_per_s: 250_000.0,
                mb_per_s: 244.1,
                p99_ms: 7.5,
                ..ProducerPerf::default()
            },
            consumer: ConsumerPerf {
                records: 1_000_000,
                mb_per_s: 512.0,
                ..ConsumerPerf::default()
            },
            broker: None,
        }
    }

    fn ceiling() -> CeilingResult {
        CeilingResult {
            kind: "ceiling".to_string(),
            machine: machine(),
            loopback_tcp_mb_per_s: 4321.0,
            odirect_write_mb_per_s: 1234.5,
            data_dir: "/data".to_string(),
            block_bytes: 1 << 20,
            seconds: 5.0,
        }
    }

    fn report() -> Report {
        Report {
            kind: "report".to_string(),
            machine: machine(),
            versions: Versions {
                spool_git: "abc1234".to_string(),
                bench: "0.1.0".to_string(),
                kafka: Some("3.9.0".to_string()),
            },
            command: "bench/compare.sh --all".to_string(),
            ceiling: Some(ceiling()),
            runs: vec![
                run("a-max", "kafka", "Kafka", 200.0, 24_000, 40_000, 1000),
                run("a-max", "spool", "Spool", 400.0, 2_000, 5_000, 100),
            ],
            tools: vec![tools("kafka", "Kafka"), tools("spool", "Spool")],
        }
    }

    #[test]
    fn markdown_has_a_row_per_target_and_the_ratios() {
        let md = render_markdown(&report());
        assert!(md.contains("Test CPU @ 3.0GHz, 8 cores, 16.0 GiB memory, Linux 6.1.0"));
        assert!(md.contains("Spool `abc1234`"));
        assert!(md.contains("Apache Kafka 3.9.0"));
        assert!(md.contains("bench/compare.sh --all"));
        assert!(md.contains("loopback TCP 4321.0 MB/s"));
        assert!(md.contains("O_DIRECT sequential write 1234.5 MB/s (1 MiB blocks"));
        assert!(md.contains("Rate: max (closed loop)."));
        assert!(md.contains(
            "| Spool | 400.0 | 400,000 | 0.50 | 2.00 | 4.00 | 8.00 | 12.00 | 1.25 | 2.50 | 5.00 \
             | 400.0 | 12.5 | 11.6 | 100.0 | 3072.0 | 0 |"
        ));
        assert!(md.contains("| Kafka | 200.0 | 200,000 | 6.00 | 24.00 | 48.00 |"));
        assert!(md.contains(
            "- **Spool vs Kafka:** throughput 2.00× · p99 publish latency 12.0× lower \
             · p99.9 end-to-end latency 8.00× lower · peak RSS 10.0× lower"
        ));
        assert!(md.contains("![a-max: publish latency by percentile](a-max-publish-latency.svg)"));
        assert!(md.contains("(a-max-e2e-latency.svg)"));
        assert!(md.contains("(a-max-throughput.svg)"));
        assert!(md.contains("## Kafka's own perf tools"));
        assert!(md.contains("| Spool | 1,000,000 | 1024 | 16 | 250,000 | 244.1 |"));
        assert!(md.contains("kafka-producer-perf-test --topic t-spool"));
    }

    #[test]
    fn missing_figures_show_a_dash_and_fixed_rates_are_stated() {
        let mut r = report();
        r.ceiling = None;
        for run in &mut r.runs {
            run.target_rate = 50_000;
        }
        r.runs[1].publish_latency = None;
        r.runs[1].end_to_end_latency = None;
        r.runs[1].broker = None;
        r.runs[1].catch_up = Some(CatchUp {
            backlog_bytes: 3 << 29,
            drain_s: 42.0,
            read_mb_per_s: 900.0,
            read_records_per_s: 921_600.0,
        });
        let md = render_markdown(&r);
        assert!(md.contains("Rate: 50,000 records/s."));
        assert!(md.contains("**Ceilings:** not measured"));
        assert!(md.contains(
            "| Spool | 400.0 | 400,000 | – | – | – | – | – | – | – | – | 400.0 | – | – | – | – | 0 |"
        ));
        assert!(md.contains(
            "throughput 2.00× · p99 publish latency – · p99.9 end-to-end latency – · peak RSS –"
        ));
        assert!(md.contains("| Spool | 1.50 | 42.0 | 900.0 | 921,600 |"));
        let headline = headline_table(&r);
        assert!(headline.contains("| a-max | Spool | 400.0 | – | – | – |"));
    }

    #[test]
    fn headline_table_has_one_row_per_workload_and_target() {
        let mut r = report();
        r.runs
            .push(run("b-latency", "spool", "Spool", 50.0, 1_500, 3_000, 80));
        let table = headline_table(&r);
        assert!(table.starts_with("| Workload | Target | MB/s | p99 publish ms"));
        assert_eq!(table.lines().count(), 2 + 3);
        assert!(table.contains("| a-max | Kafka | 200.0 | 24.00 | 40.00 | 1000.0 |"));
        assert!(table.contains("| b-latency | Spool | 50.0 | 1.50 | 3.00 | 80.0 |"));
    }

    #[test]
    fn ratios_say_higher_when_spool_is_worse() {
        assert_eq!(less_is_better(Some(4.0), Some(2.0)), "2.00× higher");
        assert_eq!(less_is_better(Some(2.0), Some(2.0)), "the same");
        assert_eq!(less_is_better(Some(0.0), Some(2.0)), MISSING);
        assert_eq!(more_is_better(Some(1.0), Some(0.0)), MISSING);
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
    }

    #[test]
    fn workload_names_become_distinct_file_stems() {
        let mut r = report();
        r.runs = vec![
            run("1 topic / 16 partitions", "spool", "Spool", 1.0, 1, 1, 1),
            run("1 topic + 16 partitions", "spool", "Spool", 1.0, 1, 1, 1),
        ];
        let stems: Vec<String> = groups(&r).into_iter().map(|g| g.stem).collect();
        assert_eq!(
            stems,
            ["1-topic---16-partitions", "1-topic---16-partitions-2"]
        );
    }

    fn args(dir: &Path) -> crate::ReportArgs {
        crate::ReportArgs {
            results: dir.to_path_buf(),
            out_dir: None,
            command: "bench/compare.sh".to_string(),
        }
    }

    #[test]
    fn main_gathers_a_results_directory_and_writes_the_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // File order differs from report order, to show the report sorts.
        crate::write_json(
            &d.join("1.json"),
            &run("b-latency", "spool", "Spool", 50.0, 1_500, 3_000, 80),
        )
        .expect("write");
        crate::write_json(
            &d.join("2.json"),
            &run("a-max", "spool", "Spool", 400.0, 2_000, 5_000, 100),
        )
        .expect("write");
        crate::write_json(
            &d.join("3.json"),
            &run("a-max", "kafka", "Kafka", 200.0, 24_000, 40_000, 1000),
        )
        .expect("write");
        crate::write_json(&d.join("tools-spool.json"), &tools("spool", "Spool")).expect("write");
        crate::write_json(&d.join("ceiling.json"), &ceiling()).expect("write");
        std::fs::write(d.join("notes.txt"), "not a result").expect("write");

        main(args(d)).expect("report");

        let text = std::fs::read_to_string(d.join(REPORT_JSON)).expect("report.json");
        let report: Report = serde_json::from_str(&text).expect("report.json parses");
        assert_eq!(report.kind, "report");
        assert_eq!(report.command, "bench/compare.sh");
        assert_eq!(report.versions.kafka.as_deref(), Some("3.9.0"));
        let order: Vec<(&str, &str)> = report
            .runs
            .iter()
            .map(|r| (r.workload.name.as_str(), r.target.system.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("a-max", "kafka"),
                ("a-max", "spool"),
                ("b-latency", "spool")
            ]
        );
        assert_eq!(report.tools.len(), 1);
        assert!(report.ceiling.is_some());

        let md = std::fs::read_to_string(d.join(REPORT_MD)).expect("report.md");
        assert_eq!(md, render_markdown(&report));
        for file in [
            "a-max-publish-latency.svg",
            "a-max-e2e-latency.svg",
            "a-max-throughput.svg",
            "b-latency-publish-latency.svg",
        ] {
            let svg = std::fs::read_to_string(d.join(file)).expect(file);
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{file}");
            assert!(md.contains(&format!("({file})")), "{file} linked");
        }

        // A second run over the same directory must not read its own report.json back.
        main(args(d)).expect("report again");
        let again: Report = serde_json::from_str(
            &std::fs::read_to_string(d.join(REPORT_JSON)).expect("report.json"),
        )
        .expect("parses");
        assert_eq!(again.runs.len(), 3);
    }

    #[test]
    fn out_dir_is_created_and_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let results = dir.path().join("results");
        std::fs::create_dir(&results).expect("mkdir");
        crate::write_json(
            &results.join("r.json"),
            &run("a", "spool", "Spool", 1.0, 1, 1, 1),
        )
        .expect("write");
        let out = dir.path().join("out/nested");
        main(crate::ReportArgs {
            out_dir: Some(out.clone()),
            ..args(&results)
        })
        .expect("report");
        assert!(out.join(REPORT_JSON).is_file() && out.join(REPORT_MD).is_file());
        assert!(!results.join(REPORT_JSON).exists());
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        crate::write_json(&d.join("good.json"), &ceiling()).expect("write");
        std::fs::write(d.join("broken.json"), "{\"kind\": \"workload\", ").expect("write");
        let err = main(args(d))
            .expect_err("malformed file refused")
            .to_string();
        assert!(err.contains("broken.json"), "{err}");
        assert!(!d.join(REPORT_MD).exists());

        std::fs::remove_file(d.join("broken.json")).expect("rm");
        std::fs::write(d.join("odd.json"), "{\"kind\": \"mystery\"}").expect("write");
        let err = main(args(d)).expect_err("unknown kind refused").to_string();
        assert!(err.contains("odd.json") && err.contains("mystery"), "{err}");

        std::fs::write(d.join("odd.json"), "{\"kind\": \"workload\"}").expect("write");
        let err = main(args(d))
            .expect_err("incomplete result refused")
            .to_string();
        assert!(err.contains("odd.json"), "{err}");

        std::fs::write(d.join("odd.json"), "[1, 2]").expect("write");
        let err = main(args(d)).expect_err("no kind refused").to_string();
        assert!(err.contains("odd.json"), "{err}");

        let empty = tempfile::tempdir().expect("tempdir");
        let err = main(args(empty.path()))
            .expect_err("nothing to report")
            .to_string();
        assert!(err.contains("no result files"), "{err}");
    }
}
