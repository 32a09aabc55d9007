//! `reservoir import FILE.csv`: one `inventory.level.set` event per row,
//! published to the stock topic for the workers to apply.
//!
//! Each row becomes the exact event a producer would send and is checked by
//! the worker's own decoder, so a row that passes is one the workers apply,
//! and a row that fails is reported with its line number and never sent.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::wire::input::{decode, TopicKind};

/// Rejected rows listed in the summary; the rest are only counted.
const SHOWN_REJECTS: usize = 100;

#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// CSV file: sku,location,on_hand[,in_stock], one level per row. A first
    /// row naming the columns (sku, location, on_hand, in_stock in any
    /// order) is read as a header.
    pub file: PathBuf,
    /// `source` of the events.
    #[arg(long, default_value = "reservoir.import")]
    pub source: String,
    /// Names this import: event ids are `RUN:LINE`. Default: a new one per
    /// run, so a later import of another file is never taken for a repeat.
    /// Give the run id printed by an interrupted import to make rows sent
    /// twice count once.
    #[arg(long)]
    pub run_id: Option<String>,
    /// First line to publish (1-based; a header line is always read):
    /// continues an interrupted import.
    #[arg(long, default_value_t = 1)]
    pub start_line: u64,
    /// Check every row and print the summary without publishing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("Kafka: {0}; check RESERVOIR_KAFKA_BOOTSTRAP and that the broker is up, then run the import again")]
    Kafka(#[from] KafkaError),
}

/// A row that was not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct ImportSummary {
    /// The `RUN` part of every event id.
    pub run_id: String,
    /// Data rows read (the header not counted).
    pub rows: u64,
    pub published: u64,
    pub rejected: u64,
    /// The first rejected rows, in file order.
    pub rejects: Vec<Rejected>,
    /// Rows Kafka did not acknowledge, and its first error.
    pub undelivered: u64,
    pub delivery_error: Option<String>,
    /// Set when stopped early: the last line read.
    pub interrupted_at: Option<u64>,
    pub elapsed: Duration,
}

impl ImportSummary {
    pub fn ok(&self) -> bool {
        self.rejected == 0 && self.undelivered == 0 && self.interrupted_at.is_none()
    }

    pub fn report(&self, topic: &str) -> String {
        let mut o = format!(
            "run {}: rows {}  published {}  rejected {}  in {:.1}s ({:.0} rows/s) to {topic}\n",
            self.run_id,
            self.rows,
            self.published,
            self.rejected,
            self.elapsed.as_secs_f64(),
            self.rows as f64 / self.elapsed.as_secs_f64().max(0.001)
        );
        for r in &self.rejects {
            o.push_str(&format!("  line {}: {}\n", r.line, r.reason));
        }
        if self.rejected as usize > self.rejects.len() {
            o.push_str(&format!("  ... and {} more rejected rows\n", self.rejected as usize - self.rejects.len()));
        }
        if self.undelivered > 0 {
            o.push_str(&format!(
                "{} rows were not acknowledged by Kafka ({}); run the import again: a level is set, not added, so rows applied twice do no harm\n",
                self.undelivered,
                self.delivery_error.as_deref().unwrap_or("unknown error")
            ));
        }
        if let Some(line) = self.interrupted_at {
            o.push_str(&format!("interrupted after line {line}; to continue, run the same command with --start-line {} --run-id {}\n", line + 1, self.run_id));
        }
        o
    }
}

/// Which column holds which field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    sku: usize,
    location: usize,
    on_hand: usize,
    in_stock: Option<usize>,
}

const POSITIONAL: Columns = Columns { sku: 0, location: 1, on_hand: 2, in_stock: Some(3) };

/// A header row's columns, or None when the row is data.
fn header(row: &csv::StringRecord) -> Result<Option<Columns>, String> {
    let names: Vec<String> = row.iter().map(|f| f.trim().to_ascii_lowercase()).collect();
    if !names.iter().any(|n| n == "sku") {
        return Ok(None);
    }
    let find = |name: &str| names.iter().position(|n| n == name);
    let need = |name: &str| find(name).ok_or_else(|| format!("the header names no {name:?} column; columns are sku, location, on_hand and optionally in_stock"));
    Ok(Some(Columns { sku: need("sku")?, location: need("location")?, on_hand: need("on_hand")?, in_stock: find("in_stock") }))
}

/// The event of one data row, checked by the worker's decoder.
fn row_event(row: &csv::StringRecord, cols: Columns, source: &str, run_id: &str, line: u64, max_bytes: usize) -> Result<(String, Vec<u8>), String> {
    let field = |i: usize, name: &str| row.get(i).map(str::trim).ok_or_else(|| format!("has no {name} column (expected sku,location,on_hand[,in_stock])"));
    let sku = field(cols.sku, "sku")?;
    let location = field(cols.location, "location")?;
    let on_hand = field(cols.on_hand, "on_hand")?;
    let mut data = Map::new();
    data.insert("sku".into(), json!(sku));
    data.insert("location".into(), json!(location));
    data.insert("on_hand".into(), json!(on_hand));
    if let Some(text) = cols.in_stock.and_then(|i| row.get(i)).map(str::trim).filter(|t| !t.is_empty()) {
        let v = match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" => true,
            "false" | "0" | "no" | "n" => false,
            _ => return Err(format!("in_stock must be true or false (or 1/0, yes/no), got {text:?}")),
        };
        data.insert("in_stock".into(), Value::Bool(v));
    }
    let value = serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": format!("{run_id}:{line}"),
        "source": source,
        "type": "inventory.level.set",
        "datacontenttype": "application/json",
        "data": data,
    }))
    .expect("JSON values serialize");
    // The decoder names fields as data.x; the columns have the same names.
    decode(TopicKind::Stock, &value, max_bytes).map_err(|e| e.to_string().replace("data.", ""))?;
    Ok((sku.to_string(), value))
}

/// Counts deliveries from librdkafka's thread.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error.lock().expect("not poisoned").get_or_insert_with(|| e.to_string());
        }
    }
}

/// Reads, checks and publishes every row; `stop` ends it after the row in
/// hand (what was sent is still flushed). Blocking: run it off the async
/// runtime.
pub fn import(cfg: &Config, args: &ImportArgs, stop: &AtomicBool) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let path = &args.file;
    let file_err = |m: String| ImportError::File { path: path.display().to_string(), message: m };
    let file = std::fs::File::open(path).map_err(|e| file_err(format!("cannot open: {e}")))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let counted = Counted { inner: std::io::BufReader::with_capacity(1 << 20, file), read: Arc::new(AtomicU64::new(0)) };
    let read = counted.read.clone();
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(counted);

    let producer: Option<ThreadedProducer<Deliveries>> = if args.dry_run {
        None
    } else {
        // Throughput over latency: large, compressed batches; the user's
        // Kafka options still win.
        let c = crate::kafka::producer_config(cfg, &[("linger.ms", "50"), ("batch.num.messages", "10000"), ("batch.size", "1000000"), ("queue.buffering.max.messages", "200000")]);
        Some(c.create_with_context(Deliveries::default())?)
    };
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {bytes}/{total_bytes}  {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );

    let mut s = ImportSummary { run_id: args.run_id.clone().unwrap_or_else(|| format!("import-{}", uuid::Uuid::new_v4().simple())), ..Default::default() };
    let mut cols = POSITIONAL;
    let mut record = csv::StringRecord::new();
    let mut first = true;
    loop {
        if stop.load(Ordering::Relaxed) {
            s.interrupted_at = Some(reader.position().line().saturating_sub(1));
            break;
        }
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(file_err(format!("line {}: {e}", e.position().map(|p| p.line()).unwrap_or(0)))),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if std::mem::take(&mut first) {
            if let Some(h) = header(&record).map_err(|m| file_err(format!("line {line}: {m}")))? {
                cols = h;
                continue;
            }
        }
        if line < args.start_line || record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        s.rows += 1;
        match row_event(&record, cols, &args.source, &s.run_id, line, cfg.max_message_bytes) {
            Err(reason) => {
                s.rejected += 1;
                if s.rejects.len() < SHOWN_REJECTS {
                    s.rejects.push(Rejected { line, reason });
                }
            }
            Ok((key, value)) => {
                if let Some(p) = &producer {
                    send(p, &cfg.topics.stock, &key, &value)?;
                }
                s.published += 1;
            }
        }
        if s.rows % 4096 == 0 {
            bar.set_position(read.load(Ordering::Relaxed));
            bar.set_message(format!("{} rows, {} rejected", s.rows, s.rejected));
        }
    }
    bar.set_position(read.load(Ordering::Relaxed));
    if let Some(p) = &producer {
        bar.set_message("waiting for Kafka to acknowledge every row");
        p.flush(Duration::from_secs(120))?;
        let d = p.context();
        s.undelivered = d.failed.load(Ordering::Relaxed);
        s.published -= s.undelivered;
        s.delivery_error = d.first_error.lock().expect("not poisoned").clone();
    }
    bar.finish_and_clear();
    s.elapsed = started.elapsed();
    Ok(s)
}

/// Queues one message, waiting while librdkafka's queue is full.
fn send(p: &ThreadedProducer<Deliveries>, topic: &str, key: &str, value: &[u8]) -> Result<(), ImportError> {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// A reader that counts bytes, for the progress bar.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Writes `rows` levels (sku `<prefix><n>`, one location) as a CSV file:
/// test and benchmark input.
pub fn write_sample(path: &Path, prefix: &str, rows: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "sku,location,on_hand,in_stock")?;
    for i in 0..rows {
        writeln!(w, "{prefix}{i},wh-{},{}.5,true", i % 3, i % 1000)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fields: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(fields.to_vec())
    }

    #[test]
    fn header_maps_columns_in_any_order() {
        assert_eq!(header(&rec(&["SKU-1", "wh", "3"])).unwrap(), None);
        let c = header(&rec(&["location", " SKU ", "in_stock", "on_hand"])).unwrap().unwrap();
        assert_eq!(c, Columns { sku: 1, location: 0, on_hand: 3, in_stock: Some(2) });
        assert!(header(&rec(&["sku", "location"])).unwrap_err().contains("on_hand"));
    }

    #[test]
    fn rows_become_checked_events() {
        let (key, value) = row_event(&rec(&["SKU-1", "wh-1", "8.5", "no"]), POSITIONAL, "src", "r1", 7, 1 << 20).unwrap();
        assert_eq!(key, "SKU-1");
        let v: Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(v["id"], "r1:7");
        assert_eq!(v["data"], json!({"sku": "SKU-1", "location": "wh-1", "on_hand": "8.5", "in_stock": false}));
        let (_, value) = row_event(&rec(&["SKU-1", "wh-1", "3"]), POSITIONAL, "src", "r1", 8, 1 << 20).unwrap();
        assert!(serde_json::from_slice::<Value>(&value).unwrap()["data"].get("in_stock").is_none());
    }

    #[test]
    fn bad_rows_say_which_field_and_why() {
        let bad = |f: &[&str]| row_event(&rec(f), POSITIONAL, "src", "r1", 2, 1 << 20).unwrap_err();
        assert!(bad(&["SKU-1", "wh-1", "-1"]).contains("on_hand"), "{}", bad(&["SKU-1", "wh-1", "-1"]));
        assert!(bad(&["SKU-1", "wh-1", "1.00001"]).contains("on_hand"));
        assert!(bad(&["SKU-1", "wh-1", "many"]).contains("on_hand"));
        assert!(bad(&["", "wh-1", "1"]).contains("sku"));
        assert!(bad(&["SKU-1", "wh-1"]).contains("on_hand column"));
        assert!(bad(&["SKU-1", "wh-1", "1", "maybe"]).contains("in_stock"));
    }
}
